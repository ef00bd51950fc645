//! Progress and error lines on standard error, each with a UTC timestamp and the program name;
//! panics too, as such a line.

fn line(level: &str, message: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let program = std::env::args().next().unwrap_or_default();
    let program =
        std::path::Path::new(&program).file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    eprintln!("{now} {program} {level}: {message}");
}

pub fn info(message: &str) {
    line("LOG", message);
}

pub fn warning(message: &str) {
    line("WARNING", message);
}

pub fn error(message: &str) {
    line("ERROR", message);
}

/// The first line of a long-running command (`run`, `watch`): which version serves which slave,
/// with which configuration file, and what it reads and writes (`serves`), so that a journal
/// shows what an instance was doing without its configuration at hand.
pub fn startup(version: &str, configuration: &std::path::Path, slave_name: &str, serves: &str) {
    info(&format!(
        "starting version {version} for slave \"{slave_name}\" with configuration \"{}\": {serves}",
        configuration.display()
    ));
}

/// Reports a panic, which is a bug, as one error line with a hint, and never with a backtrace
/// whatever `RUST_BACKTRACE` says: operators and alert commands read these lines.
pub fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let cause = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        error(&format!(
            "internal error{location}: {cause}\nHINT:  This is a bug in dbmirror, not a fault of the configuration or of the files; please report it with this message."
        ));
    }));
}
