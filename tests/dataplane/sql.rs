//! PostgreSQL clients for the checks: `psql` and `pgbench`, as any user would run them.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct Conn {
    pub host: String,
    pub user: String,
    pub password: String,
    pub db: String,
    /// Run the clients as this operating-system user (uid, gid): the local socket
    /// authenticates by `peer`, so only the `postgres` user logs in as `postgres` there.
    pub os_user: Option<(u32, u32)>,
}

impl Conn {
    pub fn new(host: &str, user: &str, password: &str, db: &str) -> Conn {
        Conn {
            host: host.into(),
            user: user.into(),
            password: password.into(),
            db: db.into(),
            os_user: None,
        }
    }

    /// The same connection, made by the operating-system user `uid`/`gid`.
    pub fn by_os_user(mut self, uid: u32, gid: u32) -> Conn {
        self.os_user = Some((uid, gid));
        self
    }

    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PGHOST", &self.host)
            .env("PGPORT", "5432")
            .env("PGUSER", &self.user)
            .env("PGPASSWORD", &self.password)
            .env("PGDATABASE", &self.db)
            .env("PGCONNECT_TIMEOUT", "3")
            .env("PGSSLMODE", "disable")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.os_user {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid).current_dir("/");
        }
        c
    }

    /// Runs `sql` (one or more statements); the last result's rows, `|`-separated.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        let out = self
            .command("psql")
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("{sql} as {} on {}: {e}", self.user, self.host))
    }
}

/// One psql session fed statements one by one; each answer is read before the next
/// statement is sent, so an answer means the server acknowledged the commit.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    pub fn open(conn: &Conn) -> Session {
        // stdbuf: psql's results go through stdio, which a pipe would buffer.
        let mut c = conn.command("stdbuf");
        c.args(["-oL", "psql", "-XAtq", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("psql");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Session {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one statement that returns one row; `None` once the session is broken.
    pub fn one(&mut self, sql: &str) -> Option<String> {
        writeln!(self.stdin, "{sql}").ok()?;
        self.stdin.flush().ok()?;
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim().to_owned()),
            _ => None,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
