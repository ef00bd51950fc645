//! Running the project's binaries and psql the way an operator would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{binary, describe, Cluster};

/// A directory that lives as long as the test (kept if the test fails).
pub struct Workdir {
    path: PathBuf,
}

impl Workdir {
    pub fn new(name: &str) -> Self {
        let path = tempfile::Builder::new()
            .prefix(&format!("dbmirror-test-{name}-"))
            .tempdir()
            .expect("a temporary directory can be created")
            .keep();
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory, created if needed.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.path.join(name);
        std::fs::create_dir_all(&dir).expect("a directory can be created");
        dir
    }

    /// Writes a file and returns its path.
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path.join(name);
        std::fs::write(&path, content).expect("a file can be written");
        path
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("work directory kept for inspection: {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// An exporter configuration for `slave_name`, writing into `outbox`, with `extra` TOML lines.
pub fn export_config(work: &Workdir, master: &Cluster, slave_name: &str, outbox: &Path, extra: &str) -> PathBuf {
    work.file(
        &format!("export-{slave_name}.toml"),
        &format!(
            "slave_name = \"{slave_name}\"\nmaster = \"{}\"\ntransaction_file_directory = \"{}\"\n{extra}\n",
            master.conninfo(),
            outbox.display()
        ),
    )
}

/// Runs `dbmirror-export --config CONFIG ARGS...`, returning its output whatever the result.
pub fn export_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary("dbmirror-export"));
    command.arg("--config").arg(config).args(args);
    command
}

/// The environment variable that makes `dbmirror-export` abort at a named point (see the
/// exporter's `fault` module); only a binary built with its feature `faults` reads it.
pub const EXPORT_CRASH_AT: &str = "DBMIRROR_EXPORT_CRASH_AT";
/// The environment variable that makes `dbmirror-export` fail its writes as on a full disk once
/// that many bytes are written; only a binary built with its feature `faults` reads it.
pub const EXPORT_DISK_FULL_AFTER: &str = "DBMIRROR_EXPORT_DISK_FULL_AFTER";
/// What to say when a fault injected through one of these variables did not happen.
pub const EXPORT_FAULTS_HINT: &str = "dbmirror-export has no fault points: build it with \
    `cargo build --workspace --bins --features dbmirror-export/faults` (scripts/test does)";

/// Runs `dbmirror-export --config CONFIG once` and fails the test if it fails.
pub fn export_once(config: &Path) -> Output {
    let output = export_command(config, &["once"]).output().expect("dbmirror-export runs");
    assert!(output.status.success(), "dbmirror-export once failed ({}):\n{}", output.status, describe(&output));
    output
}

/// The transaction files of a spool directory, in name order.
pub fn transaction_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("the spool directory can be read")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".sql") || name.ends_with(".sql.zst")
        })
        .collect();
    files.sort();
    files
}

/// Replays one file by hand: `psql -v ON_ERROR_STOP=1 -f FILE`. Returns psql's output.
pub fn psql_file(slave: &Cluster, file: &Path) -> Output {
    slave.psql(&["-v", "ON_ERROR_STOP=1", "-f", &file.display().to_string()])
}

/// Replays every file of `dir` by hand, in name order, failing on the first error.
pub fn replay_by_hand(slave: &Cluster, dir: &Path) -> usize {
    let files = transaction_files(dir);
    for file in &files {
        let output = psql_file(slave, file);
        assert!(output.status.success(), "psql -f {} failed:\n{}", file.display(), describe(&output));
    }
    files.len()
}

/// Copies every file of `from` into `to`, as rsync or a USB stick would, but for dot-files,
/// which are not part of the spool (the exporter's state file stays in its outbox, as the
/// README's `rsync --exclude='.*'` leaves it).
pub fn transfer(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("the outbox can be read") {
        let path = entry.expect("a directory entry").path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if path.is_file() && !hidden {
            std::fs::copy(&path, to.join(path.file_name().expect("a file name"))).expect("a file can be copied");
        }
    }
}

/// An applier configuration for `slave_name`, reading `spool`, with `extra` TOML lines.
pub fn apply_config(work: &Workdir, slave: &Cluster, slave_name: &str, spool: &Path, extra: &str) -> PathBuf {
    work.file(
        &format!("apply-{slave_name}.toml"),
        &format!(
            "slave_name = \"{slave_name}\"\nslave = \"{}\"\nspool = \"{}\"\n{extra}\n",
            slave.conninfo(),
            spool.display()
        ),
    )
}

/// `dbmirror-apply --config CONFIG ARGS...`.
pub fn apply_command(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary("dbmirror-apply"));
    command.arg("--config").arg(config).args(args);
    command
}

/// Runs `dbmirror-apply --config CONFIG ARGS...` and returns its output whatever the result.
pub fn apply(config: &Path, args: &[&str]) -> Output {
    apply_command(config, args).output().expect("dbmirror-apply runs")
}

/// A tool started in the background, killed when dropped unless stopped first, so that a
/// failing test leaves no process behind.
pub struct Running {
    child: Option<std::process::Child>,
}

impl Running {
    /// Starts `command`.
    pub fn start(command: &mut Command) -> Running {
        Running { child: Some(command.spawn().unwrap_or_else(|e| panic!("could not start {command:?}: {e}"))) }
    }

    /// Kills the process at once (SIGKILL), as a crash would, and waits for it to end.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("a running tool has its process");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` (a name `kill` knows, such as `HUP`) and leaves the process running.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running tool has its process").id().to_string();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(&pid).status().expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for the process to end by itself; returns what it printed.
    pub fn wait(mut self) -> Output {
        self.child
            .take()
            .expect("a running tool has its process")
            .wait_with_output()
            .expect("the process can be waited for")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .expect("a running tool has its process")
            .try_wait()
            .expect("the process can be polled")
            .is_none()
    }

    /// Sends SIGTERM and waits for the process to end; returns what it printed.
    pub fn terminate(mut self) -> Output {
        let child = self.child.take().expect("a running tool has its process");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        child.wait_with_output().expect("the process can be waited for")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Names of the spool files in `dir` (not its dot-files), sorted.
pub fn spool_names(dir: &Path) -> Vec<String> {
    file_names(dir).into_iter().filter(|n| !n.starts_with('.')).collect()
}

/// Names of the files in `dir`, sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("a directory entry"))
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// A tmpfs mounted on a directory for as long as it lives: another file system than the rest
/// of the test's files. Mounting needs root (or CAP_SYS_ADMIN); without it the test fails and
/// says so, it is never skipped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("a mount point can be created");
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .unwrap_or_else(|e| panic!("could not run mount: {e}"));
        assert!(
            output.status.success(),
            "could not mount a tmpfs on {}:\n{}\nHINT: this test needs another file system; run the tests as root \
             (or with CAP_SYS_ADMIN) so that `mount -t tmpfs` is allowed",
            path.display(),
            describe(&output)
        );
        Self { path: path.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.path).output();
    }
}
