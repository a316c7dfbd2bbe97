//! Prometheus metrics in the text exposition format, one set per process and served on the
//! webhook's `/metrics`: the webhook's requests by endpoint and outcome and its certificate
//! reloads; the controller's reconciles by result and whether this replica leads. The label
//! sets are fixed and small, so a mutex around a map is all the machinery needed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the request latency buckets, in seconds: sub-millisecond for a resolve,
/// up to the API server's webhook timeout.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Upper bounds of the reconcile duration buckets, in seconds: a quiet resync reads a few
/// objects; a pass that waits on Patroni's REST API or applies many children takes longer.
const RECONCILE_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// One histogram series.
struct Series {
    bounds: &'static [f64],
    /// Per bucket, the observations no greater than its bound (not cumulative; summed on
    /// render).
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Series {
    fn new(bounds: &'static [f64]) -> Series {
        Series {
            bounds,
            buckets: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&bound| seconds <= bound) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += seconds;
    }

    /// The `_bucket`, `_sum` and `_count` lines of histogram `name` with `labels`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.buckets) {
            cumulative += n;
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), Series>>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    read_errors: AtomicU64,
    reconciles: Mutex<BTreeMap<&'static str, Series>>,
    leading: AtomicBool,
    /// Per cluster (namespace, name), what an alert on backups needs.
    backups: Mutex<BTreeMap<(String, String), BackupMetrics>>,
}

/// The backup figures of one cluster, as its last reconcile saw them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupMetrics {
    /// Per (repository, pgBackRest type), when the newest successful backup Job completed
    /// (Unix seconds).
    pub newest: BTreeMap<(String, String), i64>,
    /// Failed pushes since the primary's last successful one (0 while archiving works);
    /// `None` before the primary reported.
    pub archive_failures: Option<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A poisoned lock only means another thread panicked mid-update; counts stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Metrics {
    pub fn observe(&self, endpoint: &'static str, outcome: &'static str, elapsed: Duration) {
        lock(&self.requests)
            .entry((endpoint, outcome))
            .or_insert_with(|| Series::new(REQUEST_BUCKETS))
            .observe(elapsed);
    }

    /// One pass of the reconciler over one cluster, and whether it succeeded.
    pub fn reconciled(&self, ok: bool, elapsed: Duration) {
        lock(&self.reconciles)
            .entry(if ok { "ok" } else { "error" })
            .or_insert_with(|| Series::new(RECONCILE_BUCKETS))
            .observe(elapsed);
    }

    /// Whether this replica holds the controller's Lease. A replica that stops leading
    /// stops reconciling: its per-cluster figures would go stale, so they go.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
        if !leading {
            lock(&self.backups).clear();
        }
    }

    /// The backup figures of a cluster with repositories; `None` forgets the cluster (it
    /// is gone, or has no repository any more).
    pub fn set_backups(&self, namespace: &str, cluster: &str, figures: Option<BackupMetrics>) {
        let key = (namespace.to_owned(), cluster.to_owned());
        let mut all = lock(&self.backups);
        match figures {
            Some(f) => {
                all.insert(key, f);
            }
            None => {
                all.remove(&key);
            }
        }
    }

    pub fn certificate_reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A poll of the certificate directory that could not read the pair (mid-rotation, or
    /// a file missing): counted on every poll, so a steady rise means an unreadable mount.
    pub fn certificate_unreadable(&self) {
        self.read_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let requests = lock(&self.requests);
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
            s.render(
                &mut out,
                "pgpilot_webhook_request_duration_seconds",
                &labels,
            );
        }
        drop(requests);
        out.push_str("# HELP pgpilot_webhook_certificate_reloads_total Changed serving certificates, loaded or rejected.\n");
        out.push_str("# TYPE pgpilot_webhook_certificate_reloads_total counter\n");
        for (result, counter) in [("ok", &self.reloads_ok), ("failed", &self.reloads_failed)] {
            let _ = writeln!(
                out,
                "pgpilot_webhook_certificate_reloads_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP pgpilot_webhook_certificate_read_errors_total Polls of the certificate directory that could not read the pair.\n");
        out.push_str("# TYPE pgpilot_webhook_certificate_read_errors_total counter\n");
        let _ = writeln!(
            out,
            "pgpilot_webhook_certificate_read_errors_total {}",
            self.read_errors.load(Ordering::Relaxed)
        );

        let reconciles = lock(&self.reconciles);
        out.push_str("# HELP pgpilot_controller_reconciles_total Passes of the reconciler over one cluster, by result.\n");
        out.push_str("# TYPE pgpilot_controller_reconciles_total counter\n");
        for result in ["ok", "error"] {
            let n = reconciles.get(result).map_or(0, |s| s.count);
            let _ = writeln!(
                out,
                "pgpilot_controller_reconciles_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP pgpilot_controller_reconcile_duration_seconds Time of one pass of the reconciler over one cluster.\n");
        out.push_str("# TYPE pgpilot_controller_reconcile_duration_seconds histogram\n");
        for (result, s) in reconciles.iter() {
            let labels = format!("result=\"{result}\"");
            s.render(
                &mut out,
                "pgpilot_controller_reconcile_duration_seconds",
                &labels,
            );
        }
        out.push_str("# HELP pgpilot_controller_leader Whether this replica holds the controller's Lease (1) or waits for it (0).\n");
        out.push_str("# TYPE pgpilot_controller_leader gauge\n");
        let _ = writeln!(
            out,
            "pgpilot_controller_leader {}",
            u8::from(self.leading.load(Ordering::Relaxed))
        );

        // Names are DNS labels and repository names `repoN`: nothing to escape.
        let backups = lock(&self.backups);
        out.push_str("# HELP pgpilot_backup_last_success_timestamp_seconds When the newest successful backup Job of a repository and type completed.\n");
        out.push_str("# TYPE pgpilot_backup_last_success_timestamp_seconds gauge\n");
        for ((ns, cluster), f) in backups.iter() {
            for ((repo, kind), at) in &f.newest {
                let _ = writeln!(
                    out,
                    "pgpilot_backup_last_success_timestamp_seconds{{namespace=\"{ns}\",cluster=\"{cluster}\",repo=\"{repo}\",type=\"{kind}\"}} {at}"
                );
            }
        }
        out.push_str("# HELP pgpilot_archive_failures Failed WAL pushes of the primary since its last successful one (0 while archiving works).\n");
        out.push_str("# TYPE pgpilot_archive_failures gauge\n");
        for ((ns, cluster), f) in backups.iter() {
            if let Some(n) = f.archive_failures {
                let _ = writeln!(
                    out,
                    "pgpilot_archive_failures{{namespace=\"{ns}\",cluster=\"{cluster}\"}} {n}"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_by_result_with_cumulative_buckets() {
        let m = Metrics::default();
        m.reconciled(true, Duration::from_millis(30));
        m.reconciled(true, Duration::from_millis(300));
        m.reconciled(false, Duration::from_secs(45));
        m.set_leading(true);
        let text = m.render();
        for line in [
            r#"pgpilot_controller_reconciles_total{result="ok"} 2"#,
            r#"pgpilot_controller_reconciles_total{result="error"} 1"#,
            r#"pgpilot_controller_reconcile_duration_seconds_bucket{result="ok",le="0.025"} 0"#,
            r#"pgpilot_controller_reconcile_duration_seconds_bucket{result="ok",le="0.05"} 1"#,
            r#"pgpilot_controller_reconcile_duration_seconds_bucket{result="ok",le="0.5"} 2"#,
            r#"pgpilot_controller_reconcile_duration_seconds_bucket{result="error",le="30"} 0"#,
            r#"pgpilot_controller_reconcile_duration_seconds_bucket{result="error",le="+Inf"} 1"#,
            r#"pgpilot_controller_reconcile_duration_seconds_count{result="ok"} 2"#,
            "pgpilot_controller_leader 1",
            "pgpilot_webhook_certificate_read_errors_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn backup_figures_per_cluster_and_forgotten_with_it() {
        let m = Metrics::default();
        let figures = BackupMetrics {
            newest: BTreeMap::from([(("repo1".into(), "full".into()), 1_764_547_200)]),
            archive_failures: Some(3),
        };
        m.set_backups("db", "orders", Some(figures));
        m.set_backups("db", "fresh", Some(BackupMetrics::default()));
        let text = m.render();
        for line in [
            r#"pgpilot_backup_last_success_timestamp_seconds{namespace="db",cluster="orders",repo="repo1",type="full"} 1764547200"#,
            r#"pgpilot_archive_failures{namespace="db",cluster="orders"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        // No report yet: no series rather than a made-up 0.
        assert!(!text.contains(r#"cluster="fresh""#), "{text}");
        m.set_backups("db", "orders", None);
        assert!(!m.render().contains("orders"));
        m.set_backups("db", "orders", Some(BackupMetrics::default()));
        m.set_leading(false);
        assert!(
            !m.render().contains("cluster="),
            "a follower serves no cluster figures"
        );
    }
}
