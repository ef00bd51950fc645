//! Progress and error lines on standard error, each with a UTC timestamp and the program name.

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
