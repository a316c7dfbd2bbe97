//! What pgpilot reproduces outside the server, checked against a real one: Debian's
//! PostgreSQL 15, the one the data-plane tests run, started here in a temporary directory
//! on a Unix socket only. The parameter contexts pgpilot warns with
//! (`src/validate/pg_settings/contexts.tsv`) are those of its `pg_settings`; the SCRAM
//! verifiers the roles Job computes (`src/render/scripts/scram.py`) are those the server
//! itself stores for the same password and salt.
//!
//! Needs PostgreSQL 15 in /usr/lib/postgresql/15/bin (`bash hack/dataplane/install.sh`,
//! which `.ci/run` calls). As root, the server runs as the `postgres` user: initdb and
//! postgres refuse root.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot::devcluster::process::Supervised;
use pgpilot::validate::pg_settings;
use tempfile::TempDir;

const BIN: &str = "/usr/lib/postgresql/15/bin";
const MAJOR: i32 = 15;

#[test]
fn the_table_matches_pg_settings_of_postgresql_15() {
    let server = Server::start();
    let rows = server.query("SELECT lower(name), context FROM pg_settings ORDER BY 1");
    let mut actual = BTreeMap::new();
    for line in rows.lines() {
        let (name, context) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("unexpected psql output line {line:?}"));
        actual.insert(name.to_owned(), context.to_owned());
    }
    let table: BTreeMap<String, String> = pg_settings::parameters(MAJOR)
        .into_iter()
        .map(|(name, context)| (name.to_owned(), context.to_string()))
        .collect();
    let diff = differences(&table, &actual);
    assert!(
        diff.is_empty(),
        "contexts.tsv's column {MAJOR} differs from pg_settings of {}:\n  {}\n\
         regenerate it: bash hack/pg-settings.sh BINDIR... (see the script for the other majors)",
        server.version,
        diff.join("\n  ")
    );
}

#[test]
fn the_roles_jobs_scram_verifiers_are_the_servers_own() {
    let server = Server::start();
    server.query("CREATE ROLE probe");
    let script = include_str!("../src/render/scripts/scram.py");
    let verify = |password: &str, stored: &str| -> String {
        let out = Command::new("python3")
            .args(["-c", script, "PGPILOT_PROBE_PASSWORD", stored])
            .env("PGPILOT_PROBE_PASSWORD", password)
            .output()
            .expect("running python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    // ASCII, non-ASCII, a fullwidth form SASLprep folds (NFKC), a soft hyphen it drops,
    // and a character it refuses (the server then uses the raw bytes, as the script does).
    for password in [
        "Zq7-pgpilot_Secret",
        "pässwörd",
        "\u{ff46}\u{ff55}\u{ff4c}\u{ff4c}",
        "a\u{ad}b",
        "a\u{7}b",
    ] {
        server.query("SET password_encryption = 'scram-sha-256'");
        let literal = password.replace('\'', "''");
        server.query(&format!("ALTER ROLE probe PASSWORD '{literal}'"));
        let stored = server.query("SELECT rolpassword FROM pg_authid WHERE rolname = 'probe'");
        let stored = stored.trim();
        assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
        // The same salt and iterations: the server's verifier, to the byte.
        assert_eq!(verify(password, stored), stored, "{password:?}");
        // No stored verifier: a fresh salt each time, the same format.
        let (a, b) = (verify(password, ""), verify(password, "md5abc"));
        assert!(a.starts_with("SCRAM-SHA-256$4096:") && a != b, "{a} {b}");
        // Sent to the server, it is stored as sent (logins with it: the data-plane suite).
        server.query(&format!("ALTER ROLE probe PASSWORD '{a}'"));
        assert_eq!(
            server
                .query("SELECT rolpassword FROM pg_authid WHERE rolname = 'probe'")
                .trim(),
            a
        );
        assert_eq!(verify(password, &a), a, "{password:?}: the salt reused");
    }
}

/// One line per parameter the table and the server disagree on.
fn differences(table: &BTreeMap<String, String>, server: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, context) in table {
        match server.get(name) {
            None => out.push(format!(
                "{name}: in the table ({context}), not in the server"
            )),
            Some(c) if c != context => {
                out.push(format!("{name}: the table says {context}, the server {c}"))
            }
            Some(_) => {}
        }
    }
    for (name, context) in server {
        if !table.contains_key(name) {
            out.push(format!(
                "{name}: in the server ({context}), not in the table"
            ));
        }
    }
    out
}

/// A throwaway PostgreSQL; stopped and its directory removed on drop, also when a test panics.
struct Server {
    process: Arc<Supervised>,
    socket_dir: PathBuf,
    version: String,
    // Dropped last: the server runs in it.
    _dir: TempDir,
}

impl Server {
    fn start() -> Server {
        let postgres = Path::new(BIN).join("postgres");
        let version = Command::new(&postgres).arg("--version").output();
        let version = match version {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).trim().to_owned()
            }
            _ => panic!(
                "{} does not run: install PostgreSQL {MAJOR} with `bash hack/dataplane/install.sh` (as root)",
                postgres.display()
            ),
        };
        let user = User::for_postgres();
        let dir = tempfile::Builder::new()
            .prefix("pgpilot-pg-settings-")
            .tempdir()
            .expect("a temporary directory");
        user.own(dir.path());
        let data = dir.path().join("data");
        let initdb = user
            .command(&Path::new(BIN).join("initdb"))
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("running initdb");
        assert!(
            initdb.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        let log = dir.path().join("postgres.log");
        let out = std::fs::File::create(&log).expect("the server log");
        let err = out.try_clone().expect("the server log");
        let mut command = user.command(&postgres);
        command
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            // No TCP at all: the socket in our own directory is the only way in.
            .args(["-c", "listen_addresses=", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let process = Supervised::spawn("postgres", command, Some(log)).expect("starting postgres");
        let server = Server {
            process,
            socket_dir: dir.path().to_owned(),
            version,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(60));
        server
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.try_query("SELECT 1") {
                Ok(_) => return,
                Err(e) => e,
            };
            if let Some(status) = self.process.exited() {
                panic!(
                    "postgres exited ({status}) before accepting connections:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "postgres not ready after {timeout:?}: {last}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_query(&self, sql: &str) -> Result<String, String> {
        let out = Command::new(Path::new(BIN).join("psql"))
            .arg("-h")
            .arg(&self.socket_dir)
            .args([
                "-U", "postgres", "-d", "postgres", "-XAtq", "-F", "\t", "-c", sql,
            ])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", self.log()))
    }

    fn log(&self) -> String {
        let path = self.process.log().cloned().unwrap_or_default();
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| format!("(no log at {}: {e})", path.display()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A fast shutdown leaves no shared memory or stray backends behind; the supervisor's
        // SIGTERM then SIGKILL to the whole process group is for a server that hangs.
        let _ = Command::new("kill")
            .args(["-INT", &self.process.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.process.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.process.stop(Duration::from_secs(5));
    }
}

/// Who runs the server: the `postgres` user when we are root, else ourselves.
struct User(Option<(u32, u32)>);

impl User {
    fn for_postgres() -> User {
        if id(&["-u"]) != 0 {
            return User(None);
        }
        let ids = (id(&["-u", "postgres"]), id(&["-g", "postgres"]));
        User(Some(ids))
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("LC_ALL", "C");
        if let Some((uid, gid)) = self.0 {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn own(&self, path: &Path) {
        if let Some((uid, gid)) = self.0 {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
        }
    }
}

/// `id ARGS` as a number; a missing postgres user means PostgreSQL is not installed.
fn id(args: &[&str]) -> u32 {
    let out = Command::new("id").args(args).output().expect("running id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "`id {}` failed: no postgres user? Install PostgreSQL {MAJOR} with `bash hack/dataplane/install.sh` (as root)",
                args.join(" ")
            )
        })
}
