//! Progress and error lines on standard error, each with a UTC timestamp.

fn line(level: &str, message: &str) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
    eprintln!("{now} dbmirror-export {level}: {message}");
}

pub fn info(message: &str) {
    line("LOG", message);
}

pub fn error(message: &str) {
    line("ERROR", message);
}
