//! Certificate rotation the way it happens in a cluster: cert-manager renews the Secret and
//! kubelet swaps the volume's `..data` symlink while the API server keeps calling.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rustls::pki_types::CertificateDer;
use tokio::task::JoinSet;

use support::client::{Client, Http};
use support::reviews::{body, response, review, sample};
use support::server::{Options, TestServer};

/// What one load client did.
#[derive(Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    /// The certificates presented on this client's connections.
    certs: Vec<CertificateDer<'static>>,
}

/// Posts the sample until `stop`: on a fresh, CA-verified connection per request, or on one
/// connection opened up front and kept alive throughout.
/// `answered` counts the successful requests as they happen, for the test to wait on.
async fn load(
    client: Client,
    http: Http,
    keep_alive: bool,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> Tally {
    let request = body(&review(
        "load",
        "CREATE",
        Some(&sample("ha-backup-pooler.yaml")),
        None,
    ));
    let mut tally = Tally::default();
    let mut kept = None;
    while !stop.load(Ordering::Relaxed) {
        let conn = match kept.take() {
            Some(conn) => Ok(conn),
            None => client.connect(http).await,
        };
        let mut conn = match conn {
            Ok(conn) => conn,
            Err(e) => {
                tally.failures.push(format!("connecting: {e}"));
                continue;
            }
        };
        if !tally.certs.contains(&conn.peer_cert) {
            tally.certs.push(conn.peer_cert.clone());
        }
        match conn.post("/mutate", request.clone()).await {
            Ok((StatusCode::OK, answer)) if response(&answer, "load")["allowed"] == true => {
                tally.ok += 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok((status, answer)) => tally
                .failures
                .push(format!("{status}: {}", String::from_utf8_lossy(&answer))),
            Err(e) => tally.failures.push(format!("posting: {e}")),
        }
        if keep_alive {
            kept = Some(conn);
        }
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_request_and_serves_the_new_certificate_within_10s() {
    let server = TestServer::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    let mut progress = Vec::new();
    for (http, keep_alive) in [
        (Http::H1, false),
        (Http::H1, false),
        (Http::H2, false),
        (Http::H1, true),
        (Http::H2, true),
    ] {
        let answered = Arc::new(AtomicUsize::new(0));
        progress.push(answered.clone());
        let task = load(
            server.client.clone(),
            http,
            keep_alive,
            stop.clone(),
            answered,
        );
        clients.spawn(async move { (keep_alive, task.await) });
    }
    // Every client under way before the swap.
    let under_way = every_client_answered(&progress, &[]).await;

    let renewed = server.ca.issue(2);
    assert_ne!(renewed.der, server.first.der);
    let swapped = Instant::now();
    server.certs.publish(&server.ca, &renewed);
    let served_after = loop {
        let conn = server.client.connect(Http::H1).await.unwrap();
        if conn.peer_cert == renewed.der {
            break swapped.elapsed();
        }
        assert_eq!(conn.peer_cert, server.first.der, "an unknown certificate");
        assert!(
            swapped.elapsed() < Duration::from_secs(10),
            "the new certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Keep the load on after the switch until every client has had two more answers, so
    // requests straddle it and each fresh-connection client opened one after it.
    let at_switch: Vec<usize> = progress.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    every_client_answered(&progress, &at_switch).await;
    stop.store(true, Ordering::Relaxed);
    assert!(under_way.iter().zip(&at_switch).all(|(a, b)| a <= b));

    let mut total = 0;
    while let Some(joined) = clients.join_next().await {
        let (keep_alive, tally) = joined.unwrap();
        assert_eq!(tally.failures, Vec::<String>::new(), "failed requests");
        assert!(tally.ok > 0);
        total += tally.ok;
        if keep_alive {
            // One connection throughout: set up with the old certificate, still answering.
            assert_eq!(tally.certs, vec![server.first.der.clone()]);
        } else {
            assert!(
                tally.certs.contains(&renewed.der),
                "fresh connections see the renewal"
            );
        }
    }
    println!(
        "{total} requests, none failed; new certificate served {served_after:?} after the swap"
    );
}

/// File names and contents of one Secret version.
type Files<'a> = Vec<(&'a str, &'a [u8])>;

#[tokio::test]
async fn a_broken_pair_is_refused_and_the_served_certificate_kept() {
    let server = TestServer::start_with(Options {
        reload_interval: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let other = server.ca.issue(3);
    let renewed = server.ca.issue(4);
    let ca = server.ca.pem().as_bytes();
    let broken: Vec<(&str, Files)> = vec![
        (
            "a key of another certificate",
            vec![
                ("ca.crt", ca),
                ("tls.crt", renewed.cert_pem.as_bytes()),
                ("tls.key", other.key_pem.as_bytes()),
            ],
        ),
        (
            "a certificate that is not PEM",
            vec![
                ("ca.crt", ca),
                ("tls.crt", b"garbage"),
                ("tls.key", renewed.key_pem.as_bytes()),
            ],
        ),
        (
            "an empty key",
            vec![
                ("ca.crt", ca),
                ("tls.crt", renewed.cert_pem.as_bytes()),
                ("tls.key", b""),
            ],
        ),
        (
            "a key swapped for the certificate",
            vec![
                ("ca.crt", ca),
                ("tls.crt", renewed.key_pem.as_bytes()),
                ("tls.key", renewed.cert_pem.as_bytes()),
            ],
        ),
        (
            "no key at all",
            vec![("ca.crt", ca), ("tls.crt", renewed.cert_pem.as_bytes())],
        ),
    ];
    // Each state is waited for by its own count, so a poll delayed past the next publish
    // (a busy machine) cannot skip one.
    let mut refused = 0;
    for (name, files) in &broken {
        let (counter, before) = if files.len() == 3 {
            refused += 1;
            (FAILED_RELOADS, refused - 1)
        } else {
            // A missing key is a read error, retried each tick and not counted as a reload.
            (READ_ERRORS, metric(&server, READ_ERRORS).await)
        };
        server.certs.publish_files(files);
        let seen = wait_for_metric(&server, counter, |n| n > before).await;
        assert_eq!(
            metric(&server, FAILED_RELOADS).await,
            refused,
            "after {name} (the {counter} count is {seen})"
        );
        let mut conn = server.client.connect(Http::H1).await.unwrap();
        assert_eq!(conn.peer_cert, server.first.der, "after {name}");
        assert_eq!(
            conn.get("/healthz").await.unwrap().0,
            StatusCode::OK,
            "after {name}"
        );
    }
    assert_eq!(refused, broken.len() as u64 - 1);
    assert_eq!(metric(&server, RELOADS_OK).await, 0);

    // A good pair after broken ones is picked up.
    server.certs.publish(&server.ca, &renewed);
    let start = Instant::now();
    while server.client.connect(Http::H1).await.unwrap().peer_cert != renewed.der {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the good pair is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The API server keeps its connections to a webhook open: each is closed gracefully at the
/// server's maximum age (HTTP/1.1 and HTTP/2 alike, never before it), and the client's next
/// connection meets the renewed certificate.
#[tokio::test]
async fn kept_alive_connections_end_at_the_maximum_age_and_reconnect_to_the_renewed_certificate() {
    let age = Duration::from_secs(3);
    let server = TestServer::start_with(Options {
        reload_interval: Duration::from_millis(100),
        max_connection_age: age,
        ..Options::default()
    })
    .await;
    let mut current = server.first.der.clone();
    for (n, http) in [Http::H1, Http::H2].into_iter().enumerate() {
        let opened = Instant::now();
        let mut conn = server.client.connect(http).await.unwrap();
        assert_eq!(conn.peer_cert, current, "{http:?}");
        assert_eq!(conn.get("/healthz").await.unwrap().0, StatusCode::OK);
        let renewed = server.ca.issue(10 + n as u64);
        server.certs.publish(&server.ca, &renewed);
        // Requests keep going over the kept connection until the server ends it.
        loop {
            match conn.get("/healthz").await {
                Ok((status, _)) => assert_eq!(status, StatusCode::OK),
                Err(_) => break,
            }
            assert!(
                opened.elapsed() < age + Duration::from_secs(30),
                "{http:?}: the connection outlived its maximum age"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let lived = opened.elapsed();
        assert!(
            lived >= age,
            "{http:?}: closed after {lived:?}, before {age:?}"
        );
        let mut again = server.client.connect(http).await.unwrap();
        assert_eq!(
            again.peer_cert, renewed.der,
            "{http:?}: the renewed certificate"
        );
        assert_eq!(again.get("/healthz").await.unwrap().0, StatusCode::OK);
        current = renewed.der;
    }
}

const FAILED_RELOADS: &str = "pgpilot_webhook_certificate_reloads_total{result=\"failed\"}";
const RELOADS_OK: &str = "pgpilot_webhook_certificate_reloads_total{result=\"ok\"}";
const READ_ERRORS: &str = "pgpilot_webhook_certificate_read_errors_total";

/// The value of one series of the server's `/metrics`.
async fn metric(server: &TestServer, series: &str) -> u64 {
    let (_, metrics) = server.client.get("/metrics").await.unwrap();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
}

/// Polls `series` until `done` holds for its value (30 s at most); returns the value.
async fn wait_for_metric(server: &TestServer, series: &str, done: impl Fn(u64) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let value = metric(server, series).await;
        if done(value) {
            return value;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{series} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until each client's count of answers is at least 2 beyond `since` (1 beyond zero
/// when `since` is empty); returns the counts then.
async fn every_client_answered(progress: &[Arc<AtomicUsize>], since: &[usize]) -> Vec<usize> {
    let start = Instant::now();
    loop {
        let now: Vec<usize> = progress.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        let enough = now.iter().enumerate().all(|(i, &n)| match since.get(i) {
            Some(&then) => n >= then + 2,
            None => n >= 1,
        });
        if enough {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a load client stalled: {now:?} answers (from {since:?})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
