//! The README speaks for the binaries; these tests hold it to what the binaries say.

use std::process::Command;

use dbmirror_tests::{binary, describe, repository};

/// The exit codes `TOOL --help` lists, as (code, meaning).
fn help_exit_codes(tool: &str) -> Vec<(String, String)> {
    let output = Command::new(binary(tool)).arg("--help").output().expect("the tool runs");
    assert!(output.status.success(), "{tool} --help failed:\n{}", describe(&output));
    let help = String::from_utf8(output.stdout).expect("--help is UTF-8");
    let (_, block) =
        help.split_once("Exit codes:\n").unwrap_or_else(|| panic!("{tool} --help lists no exit codes:\n{help}"));
    block
        .lines()
        .take_while(|line| line.starts_with("  "))
        .map(|line| {
            let (code, meaning) =
                line.trim_start().split_once("  ").unwrap_or_else(|| panic!("not a code and meaning: {line:?}"));
            (code.to_string(), meaning.to_string())
        })
        .collect()
}

/// The table below "`TOOL`:" in the README's "Exit codes" section, as (code, meaning).
fn readme_exit_codes(tool: &str) -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repository().join("README.md")).expect("README.md is readable");
    let (_, section) = readme.split_once("\n## Exit codes\n").expect("README.md has an \"Exit codes\" section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let (_, table) = section
        .split_once(&format!("`{tool}`:\n"))
        .unwrap_or_else(|| panic!("README.md's exit codes have no table for {tool}"));
    table
        .lines()
        .skip_while(|line| line.trim().is_empty())
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 2, "not a row of code and meaning: {line:?}");
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect()
}

/// Prevents the README's exit-code tables and `--help` from telling different stories: both
/// come from one table per tool, which `--help` renders; the README must match it word for word.
#[test]
fn the_readme_exit_code_tables_are_those_of_help() {
    for tool in ["dbmirror-export", "dbmirror-apply"] {
        let help = help_exit_codes(tool);
        assert!(help.len() >= 6, "{tool} --help lists too few exit codes: {help:?}");
        assert_eq!(readme_exit_codes(tool), help, "README.md's exit-code table for {tool} differs from its --help");
    }
}
