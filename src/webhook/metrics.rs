//! Prometheus metrics in the text exposition format: requests and their latency by endpoint
//! and outcome, and certificate reloads. The label sets are fixed and small, so a mutex
//! around a map is all the machinery needed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds: sub-millisecond for a resolve, up to
/// the API server's webhook timeout.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Series {
    /// Per bucket, the requests no slower than its bound (not cumulative; summed on render).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), Series>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, endpoint: &'static str, outcome: &'static str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        // A poisoned lock only means another request panicked mid-update; counts stay usable.
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let series = requests.entry((endpoint, outcome)).or_default();
        if let Some(i) = BUCKETS.iter().position(|&bound| seconds <= bound) {
            series.buckets[i] += 1;
        }
        series.count += 1;
        series.sum += seconds;
    }

    pub fn certificate_reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP pgpilot_webhook_requests_total Webhook HTTP requests by endpoint and outcome.\n");
        out.push_str("# TYPE pgpilot_webhook_requests_total counter\n");
        for ((endpoint, outcome), s) in requests.iter() {
            let _ = writeln!(
                out,
                "pgpilot_webhook_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {}",
                s.count
            );
        }
        out.push_str(
            "# HELP pgpilot_webhook_request_duration_seconds Time to answer a webhook request.\n",
        );
        out.push_str("# TYPE pgpilot_webhook_request_duration_seconds histogram\n");
        for ((endpoint, outcome), s) in requests.iter() {
            let labels = format!("endpoint=\"{endpoint}\",outcome=\"{outcome}\"");
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "pgpilot_webhook_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "pgpilot_webhook_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "pgpilot_webhook_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "pgpilot_webhook_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
        out.push_str("# HELP pgpilot_webhook_certificate_reloads_total Changed serving certificates, loaded or rejected.\n");
        out.push_str("# TYPE pgpilot_webhook_certificate_reloads_total counter\n");
        for (result, counter) in [("ok", &self.reloads_ok), ("failed", &self.reloads_failed)] {
            let _ = writeln!(
                out,
                "pgpilot_webhook_certificate_reloads_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out
    }
}
