//! The "node" the data-plane suite runs on: a private network and mount namespace.
//!
//! Why not plain loopback addresses: Patroni's Kubernetes DCS (`use_endpoints: true`) writes
//! its pod IP into the leader Endpoints, and kube-apiserver rejects Endpoints addresses in
//! 127.0.0.0/8 ("may not be in the loopback range"), as does the endpoints controller for
//! `C-primary`/`C-replicas`. So the test re-executes itself inside `unshare --net --mount`:
//! a network namespace of its own with only a loopback interface, on which each pod gets
//! an address from 198.18.0.0/24 (RFC 2544's benchmarking range). Nothing in that namespace
//! can reach, or be reached from, any other host; the control plane still listens on its
//! 127.0.0.1. The private mount namespace carries an `/etc/hosts` that plays cluster DNS.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the re-executed test: we are inside the private namespaces.
const INSIDE: &str = "PGPILOT_DATAPLANE_NODE";

/// Set in the re-executed test: the file it writes once its scenario has run to the end.
const DONE: &str = "PGPILOT_DATAPLANE_DONE";

/// Runs `test` (this test binary's test of that name) inside a fresh network and mount
/// namespace; `Err` says why it did not pass. A zero exit status is not enough: a filter
/// that matched no test exits 0 too, so the inner run must also have written its marker
/// (`scenario_completed`). Returns `None` when already inside (then the caller runs the
/// test body).
pub fn reexec_inside(test: &str) -> Option<Result<(), String>> {
    if std::env::var_os(INSIDE).is_some() {
        return None;
    }
    let marker = PathBuf::from(format!(
        "/var/tmp/pgpilot-dataplane-{}.done",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&marker);
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .env(DONE, &marker)
        .status()
        .expect("running unshare (util-linux; needs root)");
    let completed = std::fs::remove_file(&marker).is_ok();
    Some(match (status.success(), completed) {
        (true, true) => Ok(()),
        (true, false) => Err(format!(
            "the inner run exited 0 but never completed the scenario (no {})",
            marker.display()
        )),
        (false, _) => Err(format!(
            "the data-plane scenario failed ({status}; its output is above)"
        )),
    })
}

/// Called by the inner run at the very end of its scenario.
pub fn scenario_completed() {
    if let Some(marker) = std::env::var_os(DONE) {
        std::fs::write(marker, "completed\n").expect("writing the completion marker");
    }
}

/// The pod network: the address of the `n`-th pod started (1-based), on this namespace's
/// loopback interface.
pub fn pod_address(n: u8) -> String {
    format!("198.18.0.{}", 10 + n)
}

/// Brings the loopback interface up and adds `addresses` to it.
pub fn set_up_network(addresses: &[String]) {
    run("ip", &["link", "set", "lo", "up"]);
    for a in addresses {
        run("ip", &["addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
}

/// Cluster DNS: `/etc/hosts`, in this mount namespace only, becomes `file`, which
/// [`write_hosts`] rewrites in place (a bind mount follows the inode, not the name).
pub fn bind_hosts_file(file: &Path) {
    std::fs::write(file, "").expect("creating the hosts file");
    write_hosts(file, &[]);
    run(
        "mount",
        &["--bind", &file.display().to_string(), "/etc/hosts"],
    );
}

/// Rewrites the hosts file in place, without a moment at which it is empty or short
/// (resolvers read it at any time): always `HOSTS_SIZE` bytes, padded with a comment, in one
/// write at offset 0, and only when something changed.
pub fn write_hosts(file: &Path, entries: &[(String, String)]) {
    use std::os::unix::fs::FileExt;
    let mut text = String::from("127.0.0.1 localhost\n");
    for (name, ip) in entries {
        text.push_str(&format!("{ip} {name}\n"));
    }
    text.push('#');
    assert!(text.len() < HOSTS_SIZE, "too many hosts entries");
    let padded = format!("{text:<HOSTS_SIZE$}");
    if std::fs::read_to_string(file).is_ok_and(|old| old == padded) {
        return;
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("opening the hosts file");
    f.write_all_at(padded.as_bytes(), 0)
        .expect("writing the hosts file");
}

const HOSTS_SIZE: usize = 8192;

pub fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}

/// The repository root (tests run with it as the working directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
