//! Connection settings resolved as libpq resolves them, so that a `master` or `slave` setting
//! means to dbmirror what it means to psql and pg_dump: the one place where both tools turn a
//! connection string into connections.
//!
//! A connection string (`host=db1 dbname=shop`) or URL (`postgresql://db1/shop`) is resolved in
//! libpq's order (see "Connection Service File" and "Environment Variables" in the libpq
//! chapter of the PostgreSQL documentation, and `conninfo_add_defaults` in fe-connect.c):
//!
//! 1. what the connection string gives;
//! 2. the entry of the service named by `service=` or `PGSERVICE`, for what is still unset:
//!    looked up first in `PGSERVICEFILE` (default `~/.pg_service.conf`), then in
//!    `pg_service.conf` in `PGSYSCONFDIR` (default [`DEFAULT_SYSCONFDIR`]);
//! 3. the `PG*` environment variables ([`ENVIRONMENT`]), for what is still unset;
//! 4. built-in defaults: the socket directory [`DEFAULT_SOCKET_DIR`], port 5432, the operating
//!    system user, the database named like the user.
//!
//! So a service file entry overrides an environment variable, as libpq's documentation says.
//! When no password is set, one is read from the password file (`passfile=`, `PGPASSFILE`,
//! default `~/.pgpass`) for each host tried, which libpq ignores unless it is a plain file
//! without group or world access.
//!
//! TLS follows libpq's `sslmode` (section "SSL Support" of the libpq chapter) with OpenSSL:
//!
//! | sslmode | encryption | server certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow` | only if the server refuses a connection without it | as `prefer` |
//! | `prefer` (default) | if the server offers it | checked against `sslrootcert` if that file exists, else not |
//! | `require` | always | checked against `sslrootcert` if that file exists (then like `verify-ca`), else not |
//! | `verify-ca` | always | signed by a CA of `sslrootcert`, which must exist |
//! | `verify-full` | always | as `verify-ca`, and issued for the host name connected to |
//!
//! `sslrootcert` defaults to `~/.postgresql/root.crt`; `sslrootcert=system` means the system's
//! trusted CAs. A client certificate is sent when the file `sslcert` (default
//! `~/.postgresql/postgresql.crt`) exists, with its key `sslkey` (default
//! `~/.postgresql/postgresql.key`). Unix-socket connections never use TLS, as with libpq.
//!
//! libpq options that would change what a connection does and that dbmirror cannot honour
//! (GSSAPI encryption, certificate revocation lists, ...) are refused by name rather than
//! ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres::config::SslMode;
use postgres::{Client, NoTls};
use postgres_openssl::MakeTlsConnector;

use crate::error::{Error, Kind};

/// The socket directory libpq on Debian connects to when no host is given (its
/// `DEFAULT_PGSOCKET_DIR`); PostgreSQL's own builds use `/tmp`, which is taken when this
/// directory does not exist.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Where libpq on Debian looks for the system-wide `pg_service.conf` unless `PGSYSCONFDIR`
/// says otherwise (its `SYSCONFDIR`).
pub const DEFAULT_SYSCONFDIR: &str = "/etc/postgresql-common";

/// PostgreSQL's port when none is given.
pub const DEFAULT_PORT: u16 = 5432;

/// Each option dbmirror honours and the environment variable libpq reads for it.
pub const ENVIRONMENT: &[(&str, Option<&str>)] = &[
    ("host", Some("PGHOST")),
    ("hostaddr", Some("PGHOSTADDR")),
    ("port", Some("PGPORT")),
    ("dbname", Some("PGDATABASE")),
    ("user", Some("PGUSER")),
    ("password", Some("PGPASSWORD")),
    ("passfile", Some("PGPASSFILE")),
    ("service", Some("PGSERVICE")),
    ("options", Some("PGOPTIONS")),
    ("application_name", Some("PGAPPNAME")),
    ("fallback_application_name", None),
    ("connect_timeout", Some("PGCONNECT_TIMEOUT")),
    ("client_encoding", Some("PGCLIENTENCODING")),
    ("sslmode", Some("PGSSLMODE")),
    ("sslrootcert", Some("PGSSLROOTCERT")),
    ("sslcert", Some("PGSSLCERT")),
    ("sslkey", Some("PGSSLKEY")),
    ("sslnegotiation", Some("PGSSLNEGOTIATION")),
    ("sslsni", Some("PGSSLSNI")),
    ("target_session_attrs", Some("PGTARGETSESSIONATTRS")),
    ("channel_binding", Some("PGCHANNELBINDING")),
    ("load_balance_hosts", Some("PGLOADBALANCEHOSTS")),
    ("keepalives", None),
    ("keepalives_idle", None),
    ("keepalives_interval", None),
    ("keepalives_count", None),
    ("tcp_user_timeout", None),
];

/// Options libpq knows that would change what a connection does in ways dbmirror does not
/// implement: refused by name, so that nobody believes them in force.
const UNSUPPORTED: &[&str] = &[
    "gssencmode",
    "gssdelegation",
    "gsslib",
    "krbsrvname",
    "requirepeer",
    "require_auth",
    "replication",
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslcertmode",
    "sslcompression",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
    "servicefile",
    "scram_client_key",
    "scram_server_key",
    "oauth_issuer",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
];

/// A connection's resolved settings: what the tools keep of a `master` or `slave` setting.
#[derive(Debug, Clone)]
pub struct Connection {
    /// libpq keywords and their values after the service file and the environment.
    settings: BTreeMap<String, String>,
    /// Where the password file is, for hosts that get no password from the settings.
    passfile: Option<PathBuf>,
    home: Option<PathBuf>,
}

/// Where the resolution reads the environment: the process's own, or a test's.
type Environment<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Connection {
    /// Resolves `text` (a connection string or URL; empty means libpq's defaults) with this
    /// process's environment. `what` names the setting in errors.
    pub fn resolve(what: &str, text: &str) -> Result<Self, Error> {
        Self::resolve_in(what, text, &|name| std::env::var(name).ok())
    }

    fn resolve_in(what: &str, text: &str, env: Environment) -> Result<Self, Error> {
        let fail =
            |message: String| Error::config(format!("{what} is not a valid connection string or URL: {message}"));
        let mut settings = BTreeMap::new();
        for (key, value) in parse(text).map_err(fail)? {
            check_keyword(&key).map_err(fail)?;
            settings.insert(key, value);
        }
        // An empty value counts as unset throughout, as libpq's defaults do for each of these.
        settings.retain(|_, value| !value.is_empty());
        let home = env("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
        let service = settings.get("service").cloned().or_else(|| env("PGSERVICE").filter(|s| !s.is_empty()));
        if let Some(service) = service {
            apply_service(&mut settings, &service, env, home.as_deref())
                .map_err(|e| e.context(&format!("{what} names service \"{service}\"")))?;
        }
        for (key, variable) in ENVIRONMENT {
            if let Some(value) = variable.and_then(env).filter(|v| !v.is_empty()) {
                settings.entry(key.to_string()).or_insert(value);
            }
        }
        let passfile =
            settings.get("passfile").map(PathBuf::from).or_else(|| home.as_ref().map(|home| home.join(".pgpass")));
        let connection = Self { settings, passfile, home };
        // Builds every attempt once, so that a bad value stops the tool before it starts.
        for index in 0..connection.hosts().map_err(fail)?.len() {
            connection.config(index).map_err(fail)?;
        }
        connection.tls_mode().map_err(fail)?;
        Ok(connection)
    }

    /// The value of a libpq keyword after resolution, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    /// Sets a libpq keyword the tools decide themselves (`options` for session settings).
    pub fn set(&mut self, key: &str, value: &str) {
        self.settings.insert(key.to_string(), value.to_string());
    }

    /// Each host to try, in order: its name or socket directory, its address and its port.
    fn hosts(&self) -> Result<Vec<Target>, String> {
        let split = |key: &str| -> Vec<String> {
            self.get(key).map_or_else(Vec::new, |v| v.split(',').map(|s| s.trim().to_string()).collect())
        };
        let mut hosts = split("host");
        let addresses = split("hostaddr");
        if hosts.is_empty() {
            hosts = vec![String::new(); addresses.len().max(1)];
        }
        if !addresses.is_empty() && addresses.len() != hosts.len() {
            return Err(format!("it gives {} hosts and {} hostaddrs", hosts.len(), addresses.len()));
        }
        let ports = split("port");
        if ports.len() > 1 && ports.len() != hosts.len() {
            return Err(format!("it gives {} hosts and {} ports", hosts.len(), ports.len()));
        }
        hosts
            .into_iter()
            .enumerate()
            .map(|(i, host)| {
                let address = addresses.get(i).filter(|a| !a.is_empty()).cloned();
                let host = if host.is_empty() && address.is_none() { default_socket_dir() } else { host };
                let port = match ports.get(i).or(ports.first()).map(String::as_str) {
                    None | Some("") => DEFAULT_PORT,
                    Some(port) => port.parse().map_err(|_| format!("invalid port number: \"{port}\""))?,
                };
                Ok(Target { host, address, port })
            })
            .collect()
    }

    /// The settings of the attempt at host `index`, for the postgres crate, without TLS.
    fn config(&self, index: usize) -> Result<postgres::Config, String> {
        let target = self.hosts()?.swap_remove(index);
        let mut config = postgres::Config::new();
        if target.host.starts_with('/') {
            config.host_path(&target.host);
        } else if !target.host.is_empty() {
            config.host(&target.host);
        }
        if let Some(address) = &target.address {
            config.hostaddr(address.parse::<IpAddr>().map_err(|_| format!("invalid hostaddr \"{address}\""))?);
        }
        config.port(target.port);
        // The rest goes through the postgres crate's own parser, which checks each value.
        let mut text = String::new();
        for (key, value) in &self.settings {
            let key = match key.as_str() {
                "keepalives_count" => "keepalives_retries",
                "dbname"
                | "user"
                | "password"
                | "options"
                | "application_name"
                | "connect_timeout"
                | "sslnegotiation"
                | "target_session_attrs"
                | "channel_binding"
                | "load_balance_hosts"
                | "keepalives"
                | "keepalives_idle"
                | "keepalives_interval"
                | "tcp_user_timeout" => key,
                _ => continue,
            };
            text.push_str(&format!("{key}={} ", quote(value)));
        }
        let parsed: postgres::Config = text.parse().map_err(|e: postgres::Error| e.to_string())?;
        if let Some(v) = parsed.get_dbname() {
            config.dbname(v);
        }
        if let Some(v) = parsed.get_user() {
            config.user(v);
        }
        if let Some(v) = parsed.get_password() {
            config.password(v);
        }
        if let Some(v) = parsed.get_options() {
            config.options(v);
        }
        if let Some(v) = parsed.get_application_name() {
            config.application_name(v);
        }
        if let Some(v) = parsed.get_connect_timeout() {
            config.connect_timeout(*v);
        }
        if let Some(v) = parsed.get_tcp_user_timeout() {
            config.tcp_user_timeout(*v);
        }
        config.keepalives(parsed.get_keepalives());
        config.keepalives_idle(parsed.get_keepalives_idle());
        if let Some(v) = parsed.get_keepalives_interval() {
            config.keepalives_interval(v);
        }
        if let Some(v) = parsed.get_keepalives_retries() {
            config.keepalives_retries(v);
        }
        config.ssl_negotiation(parsed.get_ssl_negotiation());
        config.target_session_attrs(parsed.get_target_session_attrs());
        config.channel_binding(parsed.get_channel_binding());
        if let Some(encoding) = self.get("client_encoding") {
            // The postgres crate always speaks UTF8; another encoding cannot be honoured.
            if !encoding.eq_ignore_ascii_case("utf8") && !encoding.eq_ignore_ascii_case("utf-8") {
                return Err(format!("client_encoding \"{encoding}\" is not supported, only UTF8"));
            }
        }
        if let Some(sni) = self.get("sslsni").filter(|v| *v != "1") {
            return Err(format!("sslsni \"{sni}\" is not supported, only 1"));
        }
        Ok(config)
    }

    fn tls_mode(&self) -> Result<TlsMode, String> {
        Ok(match self.get("sslmode").unwrap_or("prefer") {
            "disable" => TlsMode::Disable,
            "allow" => TlsMode::Allow,
            "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            other => return Err(format!("invalid sslmode value: \"{other}\"")),
        })
    }

    /// Connects as `application_name`, trying each host in turn as libpq does. `what` names
    /// the database in errors ("the master", "the slave"), which also name each host tried, its
    /// port and why it failed.
    pub fn connect(&self, what: &str, application_name: &str) -> Result<Client, Error> {
        let hosts = self.hosts().map_err(Error::config)?;
        let mode = self.tls_mode().map_err(Error::config)?;
        let tls = self.tls(mode)?;
        let mut failures = Vec::new();
        let mut last = None;
        for (index, target) in hosts.iter().enumerate() {
            let mut config = self.config(index).map_err(Error::config)?;
            config.application_name(application_name);
            let mut note = None;
            if config.get_password().is_none() {
                match self.password_from_file(target, &config) {
                    Ok(Some(password)) => {
                        config.password(password);
                    }
                    Ok(None) => {}
                    Err(why) => note = Some(why),
                }
            }
            match self.connect_to(target, config, mode, tls.as_ref()) {
                Ok(client) => return Ok(client),
                Err(e) => {
                    failures.push(format!("{}: {}", target.describe(), cause(&e)));
                    last = Some((e, note));
                }
            }
        }
        let (error, note) = last.expect("there is always at least one host to try");
        let hint = hint(&error, note.as_deref(), self.passfile.as_deref());
        let mut error = Error::from(error).with_message(format!("could not connect to {what} {}", failures.join("; ")));
        if let Some(hint) = hint {
            error = error.with_hint(hint);
        }
        Err(error)
    }

    fn connect_to(
        &self,
        target: &Target,
        mut config: postgres::Config,
        mode: TlsMode,
        tls: Option<&MakeTlsConnector>,
    ) -> Result<Client, postgres::Error> {
        // libpq never uses TLS on a Unix socket, whatever sslmode says.
        let tls = match tls {
            Some(tls) if !target.host.starts_with('/') => tls.clone(),
            _ => {
                config.ssl_mode(SslMode::Disable);
                return config.connect(NoTls);
            }
        };
        if mode == TlsMode::Allow {
            config.ssl_mode(SslMode::Disable);
            match config.connect(NoTls) {
                // Only a refusal by the server is worth a second try with TLS.
                Err(e) if e.as_db_error().is_some() => {}
                other => return other,
            }
        }
        config.ssl_mode(if mode == TlsMode::Prefer { SslMode::Prefer } else { SslMode::Require });
        config.connect(tls)
    }

    /// The OpenSSL settings of `mode` with the settings' root and client certificates, as
    /// libpq's `initialize_SSL` reads them; `None` for `disable`.
    fn tls(&self, mode: TlsMode) -> Result<Option<MakeTlsConnector>, Error> {
        if mode == TlsMode::Disable {
            return Ok(None);
        }
        let in_home = |name: &str| self.home.as_ref().map(|home| home.join(".postgresql").join(name));
        let file = |key: &str, default: &str| self.get(key).map(PathBuf::from).or_else(|| in_home(default));
        let failed = |what: String| move |e: openssl::error::ErrorStack| Error::caused_by(Kind::Config, &what, e);
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(failed("could not set up TLS".into()))?;
        let verify = match file("sslrootcert", "root.crt") {
            Some(root) if root == Path::new("system") => {
                builder
                    .set_default_verify_paths()
                    .map_err(failed("could not load the system's CA certificates".into()))?;
                true
            }
            Some(root) if root.exists() => {
                builder
                    .set_ca_file(&root)
                    .map_err(failed(format!("could not read root certificate file \"{}\"", root.display())))?;
                true
            }
            root if matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) => {
                let root = root.map_or_else(|| "~/.postgresql/root.crt".to_string(), |r| r.display().to_string());
                return Err(Error::config(format!("root certificate file \"{root}\" does not exist")).with_hint(
                    "Either provide the file, use the system's trusted roots with sslrootcert=system, or change sslmode to disable server certificate verification.",
                ));
            }
            _ => false,
        };
        builder.set_verify(if verify { SslVerifyMode::PEER } else { SslVerifyMode::NONE });
        if let Some(cert) = file("sslcert", "postgresql.crt").filter(|cert| cert.exists()) {
            builder
                .set_certificate_chain_file(&cert)
                .map_err(failed(format!("could not read certificate file \"{}\"", cert.display())))?;
            let key = file("sslkey", "postgresql.key").unwrap_or_default();
            let metadata = std::fs::metadata(&key).map_err(|e| {
                Error::caused_by(
                    Kind::Config,
                    &format!("certificate present, but not private key file \"{}\"", key.display()),
                    e,
                )
            })?;
            // libpq refuses a key others can read: 0600 or less, or 0640 for a key owned by root.
            let mode = std::os::unix::fs::PermissionsExt::mode(&metadata.permissions());
            let owned_by_root = std::os::unix::fs::MetadataExt::uid(&metadata) == 0;
            if mode & if owned_by_root { 0o037 } else { 0o077 } != 0 {
                return Err(Error::config(format!(
                    "private key file \"{}\" has group or world access; file must have permissions u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) or less if owned by root",
                    key.display()
                )));
            }
            builder
                .set_private_key_file(&key, SslFiletype::PEM)
                .map_err(failed(format!("could not load private key file \"{}\"", key.display())))?;
        }
        let mut connector = MakeTlsConnector::new(builder.build());
        let full = mode == TlsMode::VerifyFull;
        connector.set_callback(move |config, _| {
            config.set_verify_hostname(full);
            Ok(())
        });
        Ok(Some(connector))
    }

    /// The password of the first line of the password file that matches this attempt, if the
    /// file exists and libpq would read it; `Err` says why it was passed over.
    fn password_from_file(&self, target: &Target, config: &postgres::Config) -> Result<Option<String>, String> {
        let Some(path) = &self.passfile else { return Ok(None) };
        let Ok(metadata) = std::fs::metadata(path) else { return Ok(None) };
        if !metadata.is_file() {
            return Err(format!("password file \"{}\" is not a plain file", path.display()));
        }
        if std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o077 != 0 {
            return Err(format!(
                "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
                path.display()
            ));
        }
        let Ok(text) = std::fs::read_to_string(path) else { return Ok(None) };
        let user = config.get_user().map(str::to_string).unwrap_or_else(os_user);
        let dbname = config.get_dbname().map_or_else(|| user.clone(), str::to_string);
        // libpq matches a connection to its default socket directory as "localhost".
        let host = if target.host.is_empty() || target.host == DEFAULT_SOCKET_DIR {
            "localhost".to_string()
        } else {
            target.host.clone()
        };
        Ok(password_in(&text, &host, &target.port.to_string(), &dbname, &user))
    }
}

/// One host to try.
#[derive(Debug, Clone)]
struct Target {
    /// Host name or socket directory; empty when only `hostaddr` is given.
    host: String,
    address: Option<String>,
    port: u16,
}

impl Target {
    /// "at host "db1" port 5432", or the socket path as libpq names it.
    fn describe(&self) -> String {
        if self.host.starts_with('/') {
            format!("on socket \"{}/.s.PGSQL.{}\"", self.host.trim_end_matches('/'), self.port)
        } else if let Some(address) = &self.address {
            let name = if self.host.is_empty() { address } else { &self.host };
            format!("at host \"{name}\" ({address}) port {}", self.port)
        } else {
            format!("at host \"{}\" port {}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

fn default_socket_dir() -> String {
    if Path::new(DEFAULT_SOCKET_DIR).is_dir() { DEFAULT_SOCKET_DIR } else { "/tmp" }.to_string()
}

fn os_user() -> String {
    whoami::username().unwrap_or_default()
}

fn check_keyword(key: &str) -> Result<(), String> {
    if ENVIRONMENT.iter().any(|(known, _)| *known == key) {
        Ok(())
    } else if UNSUPPORTED.contains(&key) {
        Err(format!("connection option \"{key}\" is not supported by dbmirror"))
    } else {
        Err(format!("invalid connection option \"{key}\""))
    }
}

/// A value in a connection string, quoted as libpq reads it.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The keywords and values of a connection string or URL, in order (a later one wins).
fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    for prefix in ["postgresql://", "postgres://"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return parse_url(rest);
        }
    }
    parse_keywords(text)
}

/// `keyword = value ...`, with values quoted in single quotes or escaped with backslashes.
fn parse_keywords(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut chars = text.chars().peekable();
    let mut pairs = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("missing \"=\" after \"{key}\""));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string".to_string()),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// `[user[:password]@][host][:port][,...][/dbname][?keyword=value&...]`, after the scheme.
fn parse_url(rest: &str) -> Result<Vec<(String, String)>, String> {
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
    let mut pairs = Vec::new();
    let hosts = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => {
            let (user, password) = credentials.split_once(':').map_or((credentials, None), |(u, p)| (u, Some(p)));
            pairs.push(("user".to_string(), decode(user)?));
            if let Some(password) = password {
                pairs.push(("password".to_string(), decode(password)?));
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let (mut names, mut ports) = (Vec::new(), Vec::new());
        for host in hosts.split(',') {
            let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
                let (name, after) = bracketed.split_once(']').ok_or("missing \"]\" in an IPv6 host address")?;
                (name, after.strip_prefix(':').unwrap_or(""))
            } else {
                host.split_once(':').unwrap_or((host, ""))
            };
            names.push(decode(name)?);
            ports.push(decode(port)?);
        }
        pairs.push(("host".to_string(), names.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_string(), ports.join(",")));
        }
    }
    if !dbname.is_empty() {
        pairs.push(("dbname".to_string(), decode(dbname)?));
    }
    for parameter in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) =
            parameter.split_once('=').ok_or_else(|| format!("missing \"=\" in URI query parameter \"{parameter}\""))?;
        let (key, value) = (decode(key)?, decode(value)?);
        // libpq's URIs accept JDBC's `ssl=true` for `sslmode=require`.
        if key == "ssl" && value == "true" {
            pairs.push(("sslmode".to_string(), "require".to_string()));
        } else {
            pairs.push((key, value));
        }
    }
    Ok(pairs)
}

/// Percent-decoding of a part of a URL.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or_else(|| format!("invalid percent-encoded token: \"{text}\""))?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("invalid percent-encoded token: \"{text}\""))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("invalid percent-encoded token: \"{text}\""))
}

/// Fills what `settings` lacks from the entry of `service`, looked up where libpq looks.
fn apply_service(
    settings: &mut BTreeMap<String, String>,
    service: &str,
    env: Environment,
    home: Option<&Path>,
) -> Result<(), Error> {
    let user_file = env("PGSERVICEFILE")
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".pg_service.conf")));
    let system_file =
        PathBuf::from(env("PGSYSCONFDIR").filter(|d| !d.is_empty()).as_deref().unwrap_or(DEFAULT_SYSCONFDIR))
            .join("pg_service.conf");
    let mut searched = Vec::new();
    for file in user_file.into_iter().chain([system_file]) {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                searched.push(format!("\"{}\"", file.display()));
                continue;
            }
            Err(e) => {
                return Err(Error::caused_by(
                    Kind::Config,
                    &format!("could not read service file \"{}\"", file.display()),
                    e,
                ))
            }
        };
        searched.push(format!("\"{}\"", file.display()));
        let found = service_entry(&text, service).map_err(|(line, why)| {
            Error::config(format!("{why} in service file \"{}\", line {line}", file.display()))
        })?;
        if let Some(entry) = found {
            for (key, value) in entry {
                if !value.is_empty() {
                    settings.entry(key).or_insert(value);
                }
            }
            return Ok(());
        }
    }
    Err(Error::config(format!("definition of service \"{service}\" not found")).with_hint(format!(
        "Add a section [{service}] to one of the service files searched: {} (PGSERVICEFILE and PGSYSCONFDIR move them).",
        searched.join(", ")
    )))
}

/// Keywords and values, in the order given.
type Keywords = Vec<(String, String)>;

/// The keywords of section `[service]` of a service file, `None` if it has no such section;
/// `Err` gives the line number and what is wrong there.
fn service_entry(text: &str, service: &str) -> Result<Option<Keywords>, (usize, String)> {
    let mut entry: Option<Keywords> = None;
    let mut in_section = false;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            if entry.is_some() && in_section {
                break;
            }
            in_section = name.strip_suffix(']') == Some(service);
            if in_section {
                entry = Some(Vec::new());
            }
            continue;
        }
        if !in_section {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((number + 1, "syntax error".to_string()));
        };
        if key == "service" {
            return Err((number + 1, "nested service specifications not supported".to_string()));
        }
        check_keyword(key).map_err(|why| (number + 1, why))?;
        entry.get_or_insert_with(Vec::new).push((key.to_string(), value.to_string()));
    }
    Ok(entry)
}

/// The password of the first line of a password file (`host:port:dbname:user:password`, `*`
/// matching anything, `\` escaping `:` and `\`) that matches.
fn password_in(text: &str, host: &str, port: &str, dbname: &str, user: &str) -> Option<String> {
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut escaped = false;
        let mut raw_star = false;
        let mut chars = line.chars();
        for c in chars.by_ref() {
            if escaped {
                field.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == ':' && fields.len() < 4 {
                fields.push((std::mem::take(&mut field), raw_star));
                raw_star = false;
            } else {
                raw_star = field.is_empty() && c == '*';
                field.push(c);
            }
        }
        if fields.len() < 4 {
            continue;
        }
        let matches = |(field, star): &(String, bool), value: &str| (*star && field == "*") || field == value;
        if matches(&fields[0], host)
            && matches(&fields[1], port)
            && matches(&fields[2], dbname)
            && matches(&fields[3], user)
        {
            return Some(field);
        }
    }
    None
}

/// Why a connection attempt failed, in a few words: the server's message, or the cause under
/// the postgres crate's "error connecting to server".
fn cause(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db.message().to_string();
    }
    match std::error::Error::source(error) {
        Some(source) if error.to_string().starts_with("error performing TLS handshake") => {
            format!("TLS handshake failed: {source}")
        }
        Some(source) => source.to_string(),
        None => error.to_string(),
    }
}

/// A hint for the usual causes of a failed connection.
fn hint(error: &postgres::Error, passfile_note: Option<&str>, passfile: Option<&Path>) -> Option<String> {
    // The postgres crate's text names only the kind of error; the cause says what happened.
    let text = format!("{error}: {}", cause(error));
    if text.contains("password missing") {
        return Some(match passfile_note {
            Some(note) => format!("The server asks for a password, and the {note}."),
            None => format!(
                "The server asks for a password: set password= or PGPASSWORD, or add a line for this connection to the password file{}.",
                passfile.map_or_else(String::new, |p| format!(" \"{}\" (passfile=, PGPASSFILE)", p.display()))
            ),
        });
    }
    if let Some(io) = std::error::Error::source(error).and_then(|s| s.downcast_ref::<std::io::Error>()) {
        if io.kind() == std::io::ErrorKind::ConnectionRefused || io.kind() == std::io::ErrorKind::NotFound {
            return Some(
                "Is the server running there and accepting connections (listen_addresses, port, unix_socket_directories)?"
                    .to_string(),
            );
        }
    }
    if text.contains("TLS") || text.contains("certificate") {
        return Some(
            "Check sslmode, the CA certificates in sslrootcert and, with verify-full, that the server's certificate names the host connected to."
                .to_string(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str, env: &[(&str, &str)]) -> Result<Connection, Error> {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Connection::resolve_in("master", text, &move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn settings(connection: &Connection) -> Vec<(&str, &str)> {
        connection.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn keyword_strings_and_urls_are_parsed_as_libpq_parses_them() {
        assert_eq!(
            parse("host = db1  dbname='my \\'shop\\'' user=a\\ b password=").unwrap(),
            [("host", "db1"), ("dbname", "my 'shop'"), ("user", "a b"), ("password", "")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(
            parse("postgresql://u%40x:p%3Aw@db1:5433,[::1]:5434/shop%20db?sslmode=verify-full&ssl=true").unwrap(),
            [
                ("user", "u@x"),
                ("password", "p:w"),
                ("host", "db1,::1"),
                ("port", "5433,5434"),
                ("dbname", "shop db"),
                ("sslmode", "verify-full"),
                ("sslmode", "require"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(parse("postgres://%2Fvar%2Frun%2Fpostgresql/db").unwrap()[0].1, "/var/run/postgresql");
        assert!(parse("postgres://").unwrap().is_empty());
        for bad in ["host", "host='x", "postgresql://h/d?x", "postgresql://h%zz/", "postgresql://[::1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_and_unsupported_options_are_refused_by_name() {
        let err = resolve("hots=x", &[]).unwrap_err().to_string();
        assert_eq!(err, "master is not a valid connection string or URL: invalid connection option \"hots\"");
        let err = resolve("gssencmode=require", &[]).unwrap_err().to_string();
        assert!(err.ends_with("connection option \"gssencmode\" is not supported by dbmirror"), "{err}");
        let err = resolve("sslmode=maybe", &[]).unwrap_err().to_string();
        assert!(err.ends_with("invalid sslmode value: \"maybe\""), "{err}");
        let err = resolve("host=a,b port=1,2,3", &[]).unwrap_err().to_string();
        assert!(err.ends_with("it gives 2 hosts and 3 ports"), "{err}");
        assert!(resolve("port=x", &[]).is_err());
        assert!(resolve("connect_timeout=x", &[]).is_err());
    }

    /// libpq's order: the connection string, then the service file, then the environment.
    #[test]
    fn the_connection_string_beats_the_service_file_which_beats_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services");
        std::fs::write(&file, "# services\n[other]\nhost=elsewhere\n\n[shop]\nhost=db1\nport=5433\ndbname=shop\n")
            .unwrap();
        let file = file.to_str().unwrap();
        let env = [("PGSERVICEFILE", file), ("PGHOST", "envhost"), ("PGUSER", "envuser"), ("PGPORT", "6000")];
        let connection = resolve("service=shop dbname=override", &env).unwrap();
        assert_eq!(
            settings(&connection),
            [("dbname", "override"), ("host", "db1"), ("port", "5433"), ("service", "shop"), ("user", "envuser")]
        );
        // PGSERVICE names the service when the string does not.
        let connection = resolve("", &[("PGSERVICE", "other"), ("PGSERVICEFILE", file)]).unwrap();
        assert_eq!(connection.get("host"), Some("elsewhere"));
        // Then pg_service.conf in PGSYSCONFDIR, when the user's file lacks the service.
        std::fs::write(dir.path().join("pg_service.conf"), "[system]\nhost=sys\n").unwrap();
        let sysconf = dir.path().to_str().unwrap();
        let connection = resolve("service=system", &[("PGSERVICEFILE", file), ("PGSYSCONFDIR", sysconf)]).unwrap();
        assert_eq!(connection.get("host"), Some("sys"));
        let err = resolve("service=none", &[("PGSERVICEFILE", file), ("PGSYSCONFDIR", sysconf)]).unwrap_err();
        assert_eq!(err.kind(), Kind::Config);
        assert!(err.to_string().starts_with("master names service \"none\": definition of service \"none\" not found"));
        assert!(err.hint().is_some_and(|h| h.contains(file)), "{err}");
    }

    #[test]
    fn service_files_are_checked_as_libpq_checks_them() {
        for (text, error) in [
            ("[s]\nhost db1\n", "syntax error in service file \"F\", line 2"),
            ("[s]\nservice=t\n", "nested service specifications not supported in service file \"F\", line 2"),
            ("[s]\nhots=x\n", "invalid connection option \"hots\" in service file \"F\", line 2"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("F");
            std::fs::write(&file, text).unwrap();
            let err = resolve("service=s", &[("PGSERVICEFILE", file.to_str().unwrap())]).unwrap_err().to_string();
            assert!(err.ends_with(&error.replace('F', file.to_str().unwrap())), "{err}");
        }
    }

    #[test]
    fn environment_variables_fill_an_empty_setting() {
        let connection =
            resolve("", &[("PGHOST", "db9"), ("PGPORT", "6432"), ("PGDATABASE", "d"), ("PGSSLMODE", "require")])
                .unwrap();
        assert_eq!(settings(&connection), [("dbname", "d"), ("host", "db9"), ("port", "6432"), ("sslmode", "require")]);
        let hosts = connection.hosts().unwrap();
        assert_eq!((hosts[0].host.as_str(), hosts[0].port), ("db9", 6432));
        assert_eq!(hosts[0].describe(), "at host \"db9\" port 6432");
        // No host at all: the default socket directory, as libpq.
        let hosts = resolve("", &[]).unwrap().hosts().unwrap();
        assert_eq!((hosts[0].host.as_str(), hosts[0].port), (default_socket_dir().as_str(), DEFAULT_PORT));
        assert_eq!(
            hosts[0].describe(),
            format!("on socket \"{}/.s.PGSQL.5432\"", default_socket_dir().trim_end_matches('/'))
        );
    }

    #[test]
    fn password_files_match_as_libpq_matches_them() {
        let text = "# comment\n\
                    db1:5432:shop:alice:first\n\
                    db1:*:*:alice:second\n\
                    db\\:2:5432:shop:bob:has\\:colon\\\\\n\
                    *:*:*:*:any:thing\n";
        assert_eq!(password_in(text, "db1", "5432", "shop", "alice").as_deref(), Some("first"));
        assert_eq!(password_in(text, "db1", "6000", "other", "alice").as_deref(), Some("second"));
        assert_eq!(password_in(text, "db:2", "5432", "shop", "bob").as_deref(), Some("has:colon\\"));
        assert_eq!(password_in(text, "x", "1", "y", "z").as_deref(), Some("any:thing"));
        // An escaped star is a star, not a wildcard.
        assert_eq!(password_in("\\*:*:*:*:p\n", "db1", "1", "d", "u"), None);
        assert_eq!(password_in("short:line\n", "short", "1", "d", "u"), None);
    }

    #[test]
    fn a_password_file_others_can_read_is_passed_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        let connection = resolve("host=db1 user=u", &[("PGPASSFILE", file.to_str().unwrap())]).unwrap();
        let target = &connection.hosts().unwrap()[0];
        let config = connection.config(0).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(connection.password_from_file(target, &config), Ok(Some("secret".to_string())));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let why = connection.password_from_file(target, &config).unwrap_err();
        assert!(why.contains("has group or world access"), "{why}");
        // passfile= in the string wins over PGPASSFILE.
        let connection = resolve("passfile=/nonexistent", &[("PGPASSFILE", file.to_str().unwrap())]).unwrap();
        assert_eq!(connection.passfile.as_deref(), Some(Path::new("/nonexistent")));
    }

    #[test]
    fn verification_without_a_root_certificate_is_refused() {
        let connection = resolve("host=db1 sslmode=verify-full sslrootcert=/nonexistent/root.crt", &[]).unwrap();
        let err = connection.tls(TlsMode::VerifyFull).err().expect("no root certificate");
        assert_eq!(err.kind(), Kind::Config);
        assert_eq!(
            err.to_string().lines().next(),
            Some("root certificate file \"/nonexistent/root.crt\" does not exist")
        );
        // require without the file does not verify, and so needs none.
        let connection = resolve("host=db1 sslmode=require sslrootcert=/nonexistent/root.crt", &[]).unwrap();
        assert!(connection.tls(TlsMode::Require).unwrap().is_some());
        assert!(connection.tls(TlsMode::Disable).unwrap().is_none());
    }
}
