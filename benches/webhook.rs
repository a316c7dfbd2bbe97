//! Load test of the webhook (`make bench-webhook`): N concurrent keep-alive HTTPS clients
//! POST the full sample (`manifests/samples/ha-backup-pooler.yaml` in an AdmissionReview) to
//! `/mutate` for a fixed time; then the same against a baseline server on the same TLS stack
//! (same listener, rustls configuration and layers) that answers with a precomputed
//! response. The ratio is what resolving, diffing and serializing cost over plain HTTPS.
//!
//! `cargo bench --bench webhook -- --clients 8 --seconds 10`. Without `--bench` (as under
//! `cargo test --all-targets`) it runs a short smoke test instead.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::routing::post;
use hyper::StatusCode;
use pgpilot::config::Config;
use pgpilot::webhook::{Settings, Webhook};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use support::client::{Client, Http};
use support::reviews::{body, response, review, sample};
use support::tls::{CertDir, TestCa};

const SAMPLE: &str = "ha-backup-pooler.yaml";

struct Args {
    clients: usize,
    duration: Duration,
}

impl Args {
    fn parse() -> Args {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .map(|v| {
                    v.parse::<u64>()
                        .unwrap_or_else(|_| panic!("{flag} takes a number"))
                })
        };
        let benchmarking = args.iter().any(|a| a == "--bench");
        Args {
            clients: value("--clients").unwrap_or(if benchmarking { 8 } else { 2 }) as usize,
            duration: match value("--seconds") {
                Some(s) => Duration::from_secs(s),
                None if benchmarking => Duration::from_secs(10),
                None => Duration::from_millis(300),
            },
        }
    }
}

struct Report {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Report {
    fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() as f64 * p).ceil() as usize).saturating_sub(1);
        self.latencies[rank.min(self.latencies.len() - 1)]
    }
}

/// `clients` tasks, each on one keep-alive connection, posting `body` until the time is up.
async fn measure(client: &Client, body: Bytes, clients: usize, duration: Duration) -> Report {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..clients {
        let client = client.clone();
        let body = body.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut conn = client.connect(Http::H1).await.expect("connecting");
            while Instant::now() < deadline {
                let sent = Instant::now();
                match conn.post("/mutate", body.clone()).await {
                    Ok((StatusCode::OK, _)) => latencies.push(sent.elapsed()),
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        conn = client.connect(Http::H1).await.expect("reconnecting");
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut report = Report {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors) = done.expect("a client task");
        report.latencies.extend(latencies);
        report.errors += errors;
    }
    report.elapsed = start.elapsed();
    report.requests = report.latencies.len();
    report.latencies.sort();
    report
}

async fn start(
    certs: &CertDir,
    routes: Option<Router>,
    shutdown: &CancellationToken,
) -> std::net::SocketAddr {
    let settings = Settings::new(
        "127.0.0.1:0".parse().unwrap(),
        certs.path().to_owned(),
        Config::default(),
    );
    let webhook = Webhook::bind(settings).await.expect("the server starts");
    let addr = webhook.local_addr();
    match routes {
        None => tokio::spawn(webhook.serve(shutdown.clone())),
        Some(routes) => tokio::spawn(webhook.serve_routes(routes, shutdown.clone())),
    };
    addr
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ca = TestCa::new();
        let certs = CertDir::new(&ca, &ca.issue(1));
        let shutdown = CancellationToken::new();
        let request = Bytes::from(body(&review("bench", "CREATE", Some(&sample(SAMPLE)), None)));

        let pgpilot = Client::new(start(&certs, None, &shutdown).await, ca.der());
        let (status, precomputed) = pgpilot.post("/mutate", request.clone()).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(response(&precomputed, "bench")["patch"].is_string(), "the sample is patched");

        let answer = Arc::new(precomputed);
        let baseline_routes = Router::new().route(
            "/mutate",
            post(move |_request: Bytes| {
                let answer = answer.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], (*answer).clone()) }
            }),
        );
        let baseline = Client::new(start(&certs, Some(baseline_routes), &shutdown).await, ca.der());

        println!(
            "POST /mutate, {SAMPLE} as an AdmissionReview ({} bytes in, {} bytes out); {} keep-alive HTTP/1.1 TLS clients, {:?} per server, {} cores",
            request.len(),
            pgpilot.post("/mutate", request.clone()).await.unwrap().1.len(),
            args.clients,
            args.duration,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        let ours = measure(&pgpilot, request.clone(), args.clients, args.duration).await;
        let base = measure(&baseline, request, args.clients, args.duration).await;
        println!("{:<10} {:>9} {:>10} {:>10} {:>10} {:>7}", "server", "requests", "req/s", "p50", "p99", "errors");
        for (name, r) in [("pgpilot", &ours), ("baseline", &base)] {
            println!(
                "{name:<10} {:>9} {:>10.0} {:>10.2?} {:>10.2?} {:>7}",
                r.requests,
                r.throughput(),
                r.percentile(0.50),
                r.percentile(0.99),
                r.errors
            );
        }
        println!(
            "pgpilot / baseline: throughput {:.2}, p50 latency {:.2}x, p99 latency {:.2}x",
            ours.throughput() / base.throughput(),
            ours.percentile(0.50).as_secs_f64() / base.percentile(0.50).as_secs_f64(),
            ours.percentile(0.99).as_secs_f64() / base.percentile(0.99).as_secs_f64(),
        );
        assert_eq!(ours.errors + base.errors, 0, "failed requests");
        assert!(ours.requests > 0 && base.requests > 0, "no request completed");
        shutdown.cancel();
    });
}
