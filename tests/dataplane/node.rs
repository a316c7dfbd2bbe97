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

/// Runs `test` (this test binary's test of that name) inside a fresh network and mount
/// namespace and returns whether it passed; returns `None` when already inside (then the
/// caller runs the test body).
pub fn reexec_inside(test: &str) -> Option<bool> {
    if std::env::var_os(INSIDE).is_some() {
        return None;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .status()
        .expect("running unshare (util-linux; needs root)");
    Some(status.success())
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

const HOSTS_SIZE: usize = 4096;

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
