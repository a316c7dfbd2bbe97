//! The real binary: `pgpilot webhook` serves, answers, and exits cleanly on SIGTERM; a
//! missing certificate stops it at start with a message naming the file.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use hyper::StatusCode;

use support::client::Client;
use support::reviews::{body, response, review, sample};
use support::tls::{CertDir, TestCa};

const PGPILOT: &str = env!("CARGO_BIN_EXE_pgpilot");

#[tokio::test]
async fn webhook_serves_then_stops_on_sigterm() {
    let ca = TestCa::new();
    let certs = CertDir::new(&ca, &ca.issue(1));
    let mut child = Command::new(PGPILOT)
        .args(["webhook", "--listen", "127.0.0.1:0", "--cert-dir"])
        .arg(certs.path())
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = log.next().expect("the webhook logs its address").unwrap();
        if let Some((_, addr)) = line.split_once("addr=") {
            break addr.trim().parse().unwrap();
        }
    };
    let client = Client::new(addr, ca.der());
    let object = sample("minimal.yaml");
    let (status, answer) = client
        .post(
            "/mutate",
            body(&review("cli", "CREATE", Some(&object), None)),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(response(&answer, "cli")["patch"].is_string());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit}");
    let rest: Vec<String> = log.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("SIGTERM received")),
        "{rest:#?}"
    );
    tokio::time::timeout(Duration::from_secs(1), async {
        assert!(client.get("/healthz").await.is_err(), "the port is closed");
    })
    .await
    .unwrap();
}

#[test]
fn a_missing_certificate_fails_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(PGPILOT)
        .args(["run", "--listen", "127.0.0.1:0", "--cert-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loading the serving certificate: reading") && stderr.contains("tls.crt"),
        "{stderr}"
    );
}
