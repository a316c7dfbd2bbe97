//! Certificate rotation the way it happens in a cluster: cert-manager renews the Secret and
//! kubelet swaps the volume's `..data` symlink while the API server keeps calling.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
async fn load(client: Client, http: Http, keep_alive: bool, stop: Arc<AtomicBool>) -> Tally {
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
                tally.ok += 1
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
    for (http, keep_alive) in [
        (Http::H1, false),
        (Http::H1, false),
        (Http::H2, false),
        (Http::H1, true),
        (Http::H2, true),
    ] {
        let task = load(server.client.clone(), http, keep_alive, stop.clone());
        clients.spawn(async move { (keep_alive, task.await) });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

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
    // Keep the load on after the switch, so requests straddle it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

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
    for (name, files) in &broken {
        server.certs.publish_files(files);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut conn = server.client.connect(Http::H1).await.unwrap();
        assert_eq!(conn.peer_cert, server.first.der, "after {name}");
        assert_eq!(
            conn.get("/healthz").await.unwrap().0,
            StatusCode::OK,
            "after {name}"
        );
    }
    let (_, metrics) = server.client.get("/metrics").await.unwrap();
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    // The missing key is a read error, retried each tick and not counted as a reload.
    let refused = format!(
        "pgpilot_webhook_certificate_reloads_total{{result=\"failed\"}} {}",
        broken.len() - 1
    );
    assert!(
        metrics.lines().any(|l| l == refused),
        "{refused:?} in\n{metrics}"
    );

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
