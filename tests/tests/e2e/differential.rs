//! Differential testing: random schemas and workloads, generated from seeds, run on a master
//! while the real `dbmirror-export` carries every committed change to two slaves, one fed by
//! `dbmirror-apply`, one by `psql -v ON_ERROR_STOP=1 -f`. At every sync point, DDL step and at
//! the end, every table of the master must equal both slaves, row by row and by
//! `dbmirror-export verify` (DESIGN invariants 1 to 4, 8 and 11). What the generator puts into a
//! scenario is in `dbmirror_tests::scenario` (and its `FEATURES`); how a scenario runs, in
//! `dbmirror_tests::trial`.
//!
//! Settings, from the environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DIFFERENTIAL_SEEDS` | `3,17,40`, a range `1-200`, or `random`: new seeds until `DIFFERENTIAL_SECONDS` are spent | [`CI_SEEDS`] |
//! | `DIFFERENTIAL_SECONDS` | with `random`, how long to keep starting new seeds | 120 |
//! | `DIFFERENTIAL_FEATURES` | which constructs the generator may use: `all,-inheritance`, `none,+copy` | `all` |
//! | `DIFFERENTIAL_UNITS` | transactions and autocommit statements per scenario | 80 |
//! | `DIFFERENTIAL_SHRINK_SECONDS` | time to shrink each new class of failure | 45 |
//! | `DIFFERENTIAL_OUT` | where reproductions are written | a new directory in the temp dir |
//! | `DIFFERENTIAL_VERBOSE` | also print an example of each error the master's statements met | off |
//!
//! A failing seed is run again sequentially, in the order its units ended; if that fails the
//! same way, it is shrunk, and the shrunk schema and workload are written as scripts whose
//! paths are printed (`reproduce.sh` runs them against a master and a slave database). Seeds
//! that fail like one seen before are listed with it. The test fails with every distinct
//! failure, its seeds and its reproduction.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use dbmirror_tests::scenario::{Features, Random, Scenario, FEATURES};
use dbmirror_tests::shrink::{shrink, write_reproduction};
use dbmirror_tests::trial::{Failure, Kind, Lab, Mode};

/// The seeds CI runs: together they use every feature of the generator at the default size
/// (`the_ci_seeds_use_every_feature` holds them to it).
const CI_SEEDS: &[u64] = &[21, 31];

struct Settings {
    seeds: Vec<u64>,
    random: bool,
    seconds: u64,
    features: Features,
    units: usize,
    shrink: Duration,
    out: PathBuf,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn number(name: &str, default: u64) -> u64 {
    var(name).map_or(default, |v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

impl Settings {
    fn from_env() -> Settings {
        let spec = var("DIFFERENTIAL_SEEDS");
        let random = spec.as_deref().map(str::trim) == Some("random");
        let seeds = match spec.as_deref().map(str::trim) {
            None => CI_SEEDS.to_vec(),
            Some("random") => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970");
                let mut random = Random::new(now.as_nanos() as u64);
                // Plenty: the time limit ends the run.
                (0..100_000).map(|_| random.next_u64() % 1_000_000_000).collect()
            }
            Some(list) => list
                .split(',')
                .flat_map(|item| {
                    let item = item.trim();
                    let bad = || panic!("DIFFERENTIAL_SEEDS: {item:?} is not a seed or a range like 1-20");
                    match item.split_once('-') {
                        Some((a, b)) => {
                            let (a, b): (u64, u64) =
                                (a.parse().unwrap_or_else(|_| bad()), b.parse().unwrap_or_else(|_| bad()));
                            (a..=b).collect::<Vec<_>>()
                        }
                        None => vec![item.parse().unwrap_or_else(|_| bad())],
                    }
                })
                .collect(),
        };
        let features = Features::parse(&var("DIFFERENTIAL_FEATURES").unwrap_or_else(|| "all".into()))
            .unwrap_or_else(|e| panic!("DIFFERENTIAL_FEATURES: {e}"));
        let out = var("DIFFERENTIAL_OUT").map(PathBuf::from).unwrap_or_else(|| {
            tempfile::Builder::new().prefix("dbmirror-differential-").tempdir().expect("a temporary directory").keep()
        });
        Settings {
            seeds,
            random,
            seconds: number("DIFFERENTIAL_SECONDS", 120),
            features,
            units: number("DIFFERENTIAL_UNITS", 80) as usize,
            shrink: Duration::from_secs(number("DIFFERENTIAL_SHRINK_SECONDS", 45)),
            out,
        }
    }
}

/// One class of failure: its first seed, shrunk, and the other seeds that failed the same way.
struct Finding {
    seeds: Vec<u64>,
    failure: Failure,
    report: String,
}

#[test]
fn random_schemas_and_workloads_leave_both_slaves_equal_to_the_master() {
    let settings = Settings::from_env();
    eprintln!(
        "differential: features {}, {} units per scenario, reproductions in {}",
        settings.features,
        settings.units,
        settings.out.display()
    );
    let started = Instant::now();
    let mut lab = Lab::start();
    let mut findings: BTreeMap<String, Finding> = BTreeMap::new();
    let mut used: BTreeSet<&'static str> = BTreeSet::new();
    let mut ran = Vec::new();
    for &seed in &settings.seeds {
        if settings.random && started.elapsed() > Duration::from_secs(settings.seconds) {
            break;
        }
        let scenario = Scenario::generate(seed, &settings.features, settings.units);
        used.extend(scenario.used.iter().copied());
        let clock = Instant::now();
        let outcome = lab.run(&scenario, Mode::Concurrent, true);
        ran.push(seed);
        let verdict = outcome.failure.as_ref().map_or("equal".to_string(), |f| format!("FAILED: {}", f.signature()));
        eprintln!(
            "seed {seed}: {} sessions, {} in {:.1} s: {verdict}",
            scenario.sessions,
            outcome.stats,
            clock.elapsed().as_secs_f64()
        );
        if var("DIFFERENTIAL_VERBOSE").is_some() {
            for (code, message) in &outcome.stats.examples {
                eprintln!("    {code}: {message}");
            }
        }
        let Some(failure) = outcome.failure.clone() else { continue };
        let dir = settings.out.join(format!("seed-{seed}"));
        let serial = scenario.with_steps(outcome.serial.clone());
        write_reproduction(&dir.join("original"), &serial, &failure, "The whole scenario, as its units ended.");
        assert!(
            failure.kind != Kind::Invalid,
            "seed {seed}: the generated scenario does not run (a mistake of the generator): {failure}\nscripts: {}",
            dir.join("original").display()
        );
        if let Some(finding) = findings.get_mut(&failure.signature()) {
            finding.seeds.push(seed);
            lab.discard(&outcome);
            continue;
        }
        eprintln!("seed {seed}: {failure}\n{}", lab.describe_run(&outcome.dir));
        let report = reproduce(&mut lab, &settings, &serial, &failure, &dir);
        eprintln!("{report}");
        findings.insert(failure.signature(), Finding { seeds: vec![seed], failure, report });
    }
    let unused: Vec<&str> = settings.features.names().filter(|f| !used.contains(f)).collect();
    eprintln!(
        "differential: {} seeds in {:.0} s; features switched on but not used by these seeds: {}",
        ran.len(),
        started.elapsed().as_secs_f64(),
        if unused.is_empty() { "none".to_string() } else { unused.join(", ") }
    );
    if !findings.is_empty() {
        let mut summary = format!("{} distinct failures in seeds {ran:?}:\n", findings.len());
        for (signature, finding) in &findings {
            summary.push_str(&format!(
                "\n== {signature}\n   seeds {:?}\n   first: {}\n{}\n",
                finding.seeds, finding.failure, finding.report
            ));
        }
        panic!("{summary}");
    }
}

/// Runs a failing scenario sequentially, shrinks it if it fails the same way there, writes the
/// reproduction, and says what it found.
fn reproduce(
    lab: &mut Lab,
    settings: &Settings,
    serial: &Scenario,
    failure: &Failure,
    dir: &std::path::Path,
) -> String {
    let again = lab.run(serial, Mode::Sequential, false);
    let (start, note) = match again.failure {
        Some(f) if f.signature() == failure.signature() => {
            (f, "It fails the same way when its units run one after another.".to_string())
        }
        Some(f) if f.kind != Kind::Invalid => {
            let note = format!(
                "Run sequentially it fails differently: {}. The reproduction shows that failure; the first needs the concurrent schedule (see original/).",
                f.signature()
            );
            (f, note)
        }
        other => {
            return format!(
                "   it needs the concurrent schedule: run sequentially, {}.\n   the whole scenario: {}",
                other.map_or("it passes".to_string(), |f| format!("it fails with {f}")),
                dir.join("original").display()
            )
        }
    };
    let shrunk = shrink(lab, serial, &start, settings.shrink);
    let notes = format!(
        "{note}\nShrunk in {} sequential runs{}.",
        shrunk.runs,
        if shrunk.finished { "" } else { " (out of time: DIFFERENTIAL_SHRINK_SECONDS may shrink it further)" }
    );
    let files = write_reproduction(dir, &shrunk.scenario, &shrunk.failure, &notes);
    format!(
        "   {note}\n   shrunk to {} steps in {} runs{}: {}\n   {}\n   files: {}",
        shrunk.scenario.steps.len(),
        shrunk.runs,
        if shrunk.finished { "" } else { " (out of time)" },
        shrunk.failure,
        dir.join("reproduce.sh").display(),
        files
            .iter()
            .map(|f| f.file_name().unwrap_or_default().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The CI seeds must keep exercising every construct the generator knows, or CI would pass
/// without testing it.
#[test]
fn the_ci_seeds_use_every_feature() {
    let mut used = BTreeSet::new();
    for &seed in CI_SEEDS {
        used.extend(Scenario::generate(seed, &Features::all(), 80).used);
    }
    let unused: Vec<&str> = FEATURES.iter().map(|(name, _)| *name).filter(|f| !used.contains(f)).collect();
    assert!(unused.is_empty(), "no CI seed uses {unused:?}: choose CI_SEEDS that do");
}

/// Prints seeds that together use every feature, for choosing `CI_SEEDS`:
/// `cargo test -p dbmirror-tests --test e2e differential::choose_ci_seeds -- --ignored --nocapture`.
#[test]
#[ignore = "a tool for choosing CI_SEEDS, not a test"]
fn choose_ci_seeds() {
    let candidates: Vec<(u64, BTreeSet<&'static str>)> =
        (1..500).map(|seed| (seed, Scenario::generate(seed, &Features::all(), 80).used)).collect();
    let mut missing: BTreeSet<&str> = FEATURES.iter().map(|(name, _)| *name).collect();
    let mut chosen = Vec::new();
    // Greedily, the seed that adds most of what is still missing, the smallest of equals.
    while let Some((seed, used)) = candidates
        .iter()
        .filter(|(_, used)| used.iter().any(|f| missing.contains(f)))
        .max_by_key(|(seed, used)| (used.iter().filter(|f| missing.contains(*f)).count(), std::cmp::Reverse(*seed)))
    {
        chosen.push(*seed);
        missing.retain(|f| !used.contains(f));
    }
    println!("seeds {chosen:?} use every feature but {missing:?}");
}
