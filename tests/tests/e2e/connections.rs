//! Connections behave as libpq's: TLS up to verify-full with a certificate made here, client
//! certificates, the password file, service files and `PG*` variables with an empty `master`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dbmirror_tests::tools::{export_command, Workdir};
use dbmirror_tests::{describe, Cluster};

/// A master with the extension, one mirrored table and slave `slave1` registered, listening on
/// 127.0.0.1 with `settings`.
fn master(settings: &[&str]) -> Cluster {
    let master = Cluster::start_tcp("master", settings);
    master.create_extension();
    master.execute("CREATE TABLE item (id integer PRIMARY KEY, name text); SELECT dbmirror_mirror_table('item');");
    master.execute("INSERT INTO dbmirror_MirrorHost (SlaveName) VALUES ('slave1'); INSERT INTO item VALUES (1, 'a')");
    master
}

/// `dbmirror-export once` with `master` as the master setting and `env` set.
fn export(work: &Workdir, master: &str, env: &[(&str, &str)]) -> Output {
    let outbox = work.dir("outbox");
    let config = work.file(
        "export.toml",
        &format!(
            "slave_name = \"slave1\"\nmaster = \"{}\"\ntransaction_file_directory = \"{}\"\n",
            master.replace('\\', "\\\\").replace('"', "\\\""),
            outbox.display()
        ),
    );
    let mut command = export_command(&config, &["once"]);
    // The tests' own environment must not decide where the exporter connects.
    for variable in ["PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGSERVICE", "PGSSLMODE"] {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied()).output().expect("dbmirror-export runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").current_dir(dir).args(args).output().unwrap_or_else(|e| {
        panic!("could not run openssl: {e}\nHINT: install the openssl command line tool (apt install openssl)")
    });
    assert!(output.status.success(), "openssl {args:?} failed:\n{}", describe(&output));
}

/// A CA, and a certificate it signs for `subject` with its key: `NAME.crt` and `NAME.key`.
fn certificate(dir: &Path, name: &str, subject: &str, extensions: &str) -> (PathBuf, PathBuf) {
    let (key, request, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
    openssl(
        dir,
        &["req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", &key, "-out", &request, "-subj", subject],
    );
    std::fs::write(dir.join(format!("{name}.ext")), extensions).unwrap();
    let ext = format!("{name}.ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &request,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &crt,
            "-extfile",
            &ext,
        ],
    );
    std::fs::set_permissions(dir.join(&key), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (dir.join(crt), dir.join(key))
}

/// A master with `ssl = on` and a server certificate for "localhost" signed by a CA made here;
/// returns the CA's certificate and a client certificate for the role postgres.
fn tls_master(work: &Workdir) -> (Cluster, PathBuf, PathBuf, PathBuf) {
    let dir = work.dir("certificates");
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=dbmirror test CA",
        ],
    );
    let (server_crt, server_key) = certificate(&dir, "server", "/CN=localhost", "subjectAltName=DNS:localhost\n");
    let (client_crt, client_key) = certificate(&dir, "client", "/CN=postgres", "basicConstraints=CA:FALSE\n");
    let master = master(&[]);
    let read = |path: &Path| std::fs::read(path).unwrap();
    let crt = master.private_file("server.crt", &read(&server_crt));
    let key = master.private_file("server.key", &read(&server_key));
    let ca = master.private_file("ca.crt", &read(&dir.join("ca.crt")));
    for (setting, path) in [("ssl_cert_file", &crt), ("ssl_key_file", &key), ("ssl_ca_file", &ca)] {
        master.execute(&format!("ALTER SYSTEM SET {setting} = '{}'", path.display()));
    }
    master.execute("ALTER SYSTEM SET ssl = on");
    master.set_hba(&["hostssl all all 127.0.0.1/32 trust"]);
    let on = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        master.query_value("SHOW ssl") == "on"
    });
    assert!(on, "the server did not turn ssl on:\n{}", master.server_log());
    (master, dir.join("ca.crt"), client_crt, client_key)
}

#[test]
fn tls_verify_full_checks_the_chain_and_the_host_name() {
    let work = Workdir::new("tls");
    let (master, ca, client_crt, client_key) = tls_master(&work);
    let port = master.port();
    let ca = ca.display();
    let good = format!("host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={ca}");
    let output = export(&work, &good, &[]);
    // pg_hba lets TCP connections in only with TLS (hostssl).
    assert!(output.status.success(), "{}", describe(&output));

    // The certificate names localhost, not this name: verify-full refuses it, verify-ca not.
    let wrong =
        format!("host=db.invalid hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslrootcert={ca}");
    let output = export(&work, &format!("{wrong} sslmode=verify-full"), &[]);
    assert!(!output.status.success(), "{}", describe(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!(
            "could not connect to the master at host \"db.invalid\" (127.0.0.1) port {port}: TLS handshake failed"
        )),
        "{text}"
    );
    assert!(text.contains("hostname mismatch"), "{text}");
    assert!(text.contains("HINT:  Check sslmode"), "{text}");
    let output = export(&work, &format!("{wrong} sslmode=verify-ca"), &[]);
    assert!(output.status.success(), "{}", describe(&output));

    // A CA that did not sign the server's certificate.
    let other = work.dir("other");
    openssl(
        &other,
        &[
            "req",
            "-new",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-newkey",
            "rsa:2048",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=other CA",
        ],
    );
    let output = export(&work, &good.replace(&ca.to_string(), &other.join("ca.crt").display().to_string()), &[]);
    assert!(stderr(&output).contains("certificate verify failed"), "{}", describe(&output));

    // pg_hba asks for a client certificate: sent from sslcert and sslkey.
    master.set_hba(&["hostssl all all 127.0.0.1/32 cert"]);
    let output =
        export(&work, &format!("{good} sslcert={} sslkey={}", client_crt.display(), client_key.display()), &[]);
    assert!(output.status.success(), "{}", describe(&output));
    let output = export(&work, &good, &[]);
    assert!(!output.status.success(), "no client certificate:\n{}", describe(&output));
    assert!(
        stderr(&output)
            .contains(&format!("could not connect to the master at host \"localhost\" (127.0.0.1) port {port}")),
        "{}",
        describe(&output)
    );
    // sslmode=require over TLS with a server psql also reaches.
    master.set_hba(&["hostssl all all 127.0.0.1/32 trust"]);
    let output =
        export(&work, &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require"), &[]);
    assert!(output.status.success(), "{}", describe(&output));
}

/// The password comes from the file PGPASSFILE names; without it the error says what to do.
#[test]
fn the_password_file_gives_the_password_the_server_asks_for() {
    let work = Workdir::new("pgpass");
    let master = master(&[]);
    master.execute("ALTER ROLE postgres PASSWORD 'se:cret'");
    master.set_hba(&["host all all 127.0.0.1/32 scram-sha-256"]);
    let port = master.port();
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let passfile = work.file("pgpass", &format!("# for the tests\n127.0.0.1:{port}:postgres:postgres:se\\:cret\n"));
    std::fs::set_permissions(&passfile, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let passfile = passfile.to_str().unwrap();
    let output = export(&work, &conninfo, &[("PGPASSFILE", passfile)]);
    assert!(output.status.success(), "{}", describe(&output));
    let output = export(&work, &format!("{conninfo} passfile={passfile}"), &[("HOME", "/nonexistent")]);
    assert!(output.status.success(), "{}", describe(&output));

    let output = export(&work, &conninfo, &[("PGPASSFILE", "/nonexistent/pgpass")]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("could not connect to the master at host \"127.0.0.1\" port {port}: password missing")),
        "{text}"
    );
    assert!(text.contains("HINT:  The server asks for a password: set password= or PGPASSWORD"), "{text}");

    // libpq passes over a password file others can read, and so does the exporter.
    std::fs::set_permissions(passfile, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let output = export(&work, &conninfo, &[("PGPASSFILE", passfile)]);
    assert!(stderr(&output).contains("has group or world access"), "{}", describe(&output));
}

#[test]
fn a_service_file_names_the_master() {
    let work = Workdir::new("service");
    let master = master(&[]);
    let services = work.file(
        "pg_service.conf",
        &format!(
            "[other]\nhost=db.invalid\n\n[shop]\nhost=127.0.0.1\nport={}\nuser=postgres\ndbname=postgres\n",
            master.port()
        ),
    );
    let services = services.to_str().unwrap();
    let output = export(&work, "service=shop", &[("PGSERVICEFILE", services), ("PGHOST", "db.invalid")]);
    assert!(output.status.success(), "{}", describe(&output));
    let output = export(&work, "", &[("PGSERVICEFILE", services), ("PGSERVICE", "shop")]);
    assert!(output.status.success(), "{}", describe(&output));
    let output = export(&work, "service=none", &[("PGSERVICEFILE", services), ("PGSYSCONFDIR", "/nonexistent")]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(stderr(&output).contains("definition of service \"none\" not found"), "{}", describe(&output));
}

/// An empty `master` means libpq's defaults and the PG* variables.
#[test]
fn pg_variables_fill_an_empty_master_setting() {
    let work = Workdir::new("environment");
    let master = master(&[]);
    let port = master.port().to_string();
    let socket = master.socket_dir().to_str().unwrap().to_string();
    let env =
        [("PGHOST", socket.as_str()), ("PGPORT", port.as_str()), ("PGUSER", "postgres"), ("PGDATABASE", "postgres")];
    let output = export(&work, "", &env);
    assert!(output.status.success(), "{}", describe(&output));
    let output = export(&work, "", &[("PGHOST", "127.0.0.1"), ("PGPORT", &port), ("PGUSER", "postgres")]);
    assert!(output.status.success(), "{}", describe(&output));

    // Nothing listens there: the error names the socket and the cause.
    let output = export(&work, "", &[("PGHOST", "/nonexistent"), ("PGPORT", "5499")]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let text = stderr(&output);
    assert!(text.contains("could not connect to the master on socket \"/nonexistent/.s.PGSQL.5499\": "), "{text}");
    assert!(text.contains("HINT:  Is the server running there"), "{text}");
}
