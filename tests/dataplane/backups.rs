//! Backups asked for without exec: the `pgpilot.io/backup` annotation, the Job the
//! operator makes for it, the request's record in `status.lastBackup` and the
//! `LastBackupSucceeded` condition, with the real pgBackRest writing the repository.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::kube::wait_for;
use super::{CLUSTER, Harness, NAMESPACE, set_mode};

/// A job's pods that no kubelet runs yet (the Job controller made them, Pending).
fn waiting_pod(h: &Harness, job: &str) -> Option<String> {
    h.kube
        .list("pods", &format!("job-name={job}"))
        .into_iter()
        .find(|p| p["status"]["podIP"].is_null() && p["metadata"]["deletionTimestamp"].is_null())
        .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
}

fn last_backup(h: &Harness) -> Value {
    h.kube
        .get("postgrescluster", CLUSTER)
        .map(|c| c["status"]["lastBackup"].clone())
        .unwrap_or_default()
}

/// Waits for `status.lastBackup` to show `value` in `phase`; returns the record.
fn wait_record(h: &Harness, value: &str, phase: &str, secs: u64) -> Value {
    wait_for(&format!("status.lastBackup {value} {phase}"), secs, || {
        let r = last_backup(h);
        (r["request"] == value && r["phase"] == phase).then_some(r)
    })
}

/// Jobs the CronJob controller made on schedule whose pod waits for a node.
fn scheduled_waiting(h: &Harness) -> Vec<String> {
    h.kube
        .list(
            "jobs",
            &format!("pgpilot.io/cluster={CLUSTER},!pgpilot.io/backup-request"),
        )
        .into_iter()
        .filter(|j| j["metadata"]["ownerReferences"][0]["kind"] == "CronJob")
        .filter_map(|j| j["metadata"]["name"].as_str().map(str::to_owned))
        .filter(|j| waiting_pod(h, j).is_some())
        .collect()
}

/// Whether pgBackRest said, in any of these logs, that a lock was held.
fn lock_conflict(logs: &[String]) -> Option<&String> {
    logs.iter()
        .find(|l| l.contains("[050]") || l.contains("unable to acquire lock"))
}

impl Harness {
    /// The Job of request `value`, once the operator has made it. A backup the schedule
    /// started meanwhile (the cluster's CronJobs fire every six hours) makes the request
    /// wait: it is run, as a node would.
    fn request_job(&mut self, value: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = last_backup(self);
            if r["request"] == value
                && r["phase"] == "Running"
                && let Some(job) = r["job"].as_str()
            {
                return job.to_owned();
            }
            for job in scheduled_waiting(self) {
                let (ok, log) = self.run_job_pod(&job);
                assert!(ok, "scheduled backup Job {job}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the Job of backup request {value}: status.lastBackup is {r}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn annotate_backup(&self, value: &str) {
        self.annotate(&format!("pgpilot.io/backup={value}"))
            .unwrap_or_else(|e| panic!("pgpilot.io/backup={value}: {e}"));
    }

    /// Runs the next pod of `job` to completion; (success, log).
    pub fn run_job_pod(&mut self, job: &str) -> (bool, String) {
        let pod = wait_for(&format!("a pod of Job {job}"), 120, || {
            waiting_pod(self, job)
        });
        let ip = self.take_ip();
        self.kubelet.run_to_completion(&pod, &ip)
    }

    /// Asks for a backup with `pgpilot.io/backup`, runs the Job's pod, waits for the
    /// status to record success; returns the times from the request to the record and of
    /// the pod's run.
    pub fn request_backup(&mut self, value: &str) -> (Duration, Duration) {
        let t = Instant::now();
        self.annotate_backup(value);
        let job = self.request_job(value);
        let created = t.elapsed();
        let run = Instant::now();
        let (ok, log) = self.run_job_pod(&job);
        let run = run.elapsed();
        let ran = t.elapsed();
        assert!(ok, "backup Job {job} ({value}) failed:\n{log}");
        assert!(lock_conflict(&[log]).is_none(), "{value}: a lock conflict");
        let record = wait_record(self, value, "Succeeded", 60);
        assert!(
            record["startTime"].is_string() && record["completionTime"].is_string(),
            "{record}"
        );
        println!(
            "dataplane: {value}: Job made {:.1} s after the request, its pod ran {:.1} s (from being bound), recorded Succeeded {:.1} s after it ended",
            created.as_secs_f64(),
            run.as_secs_f64(),
            (t.elapsed() - ran).as_secs_f64()
        );
        (t.elapsed(), run)
    }

    /// A directory of stanza `db` in repository volume `repo1` (the repository host's
    /// claim): `backup`, where pgBackRest writes backups, or `archive`, where WAL goes.
    pub fn repo_dir(&self, part: &str) -> PathBuf {
        self.root
            .join("volumes")
            .join(format!("repo1-{CLUSTER}-repo-host-0"))
            .join(part)
            .join("db")
    }

    /// A request for the same value again does nothing; a failed backup turns
    /// `LastBackupSucceeded` False with the Job's reason; two requests at once run one
    /// after the other, and pgBackRest never meets a held lock.
    pub fn backup_requests(&mut self, figures: &mut Vec<String>) {
        // The value of the last request, removed and set again: done already.
        let done = last_backup(self);
        let value = done["request"]
            .as_str()
            .expect("a recorded request")
            .to_owned();
        let job = done["job"].as_str().expect("the request's Job").to_owned();
        let uid = |h: &Harness| {
            h.kube
                .get("job", &job)
                .map(|j| j["metadata"]["uid"].clone())
        };
        let pods = |h: &Harness| h.kube.list("pods", &format!("job-name={job}")).len();
        let (uid_before, pods_before) = (uid(self), pods(self));
        assert!(
            uid_before.is_some(),
            "the Job of the current request is kept"
        );
        self.annotate("pgpilot.io/backup-")
            .unwrap_or_else(|e| panic!("removing pgpilot.io/backup: {e}"));
        self.annotate_backup(&value);
        self.wait_for_resyncs(2);
        // Without a request its finished Job may go; never does another run.
        let uid_after = uid(self);
        assert!(
            uid_after.is_none() || uid_after == uid_before,
            "a second Job for {value}"
        );
        assert!(pods(self) <= pods_before, "another pod for {value}");
        assert_eq!(last_backup(self), done, "the record of {value} changed");

        // A backup that cannot write its repository fails, and says so.
        let dir = self.repo_dir("backup");
        let mode = mode_of(&dir);
        set_mode(&dir, 0o555);
        let failing = "repo1:full@read-only";
        let t = Instant::now();
        self.annotate_backup(failing);
        let job = self.request_job(failing);
        let mut attempts = 0;
        let failed = loop {
            let pod = wait_for(&format!("a pod of Job {job}, or its failure"), 180, || {
                if let Some(p) = waiting_pod(self, &job) {
                    return Some(Some(p));
                }
                let r = last_backup(self);
                (r["request"] == failing && r["phase"] == "Failed").then_some(None)
            });
            let Some(pod) = pod else {
                break last_backup(self);
            };
            let ip = self.take_ip();
            let (ok, log) = self.kubelet.run_to_completion(&pod, &ip);
            assert!(!ok, "a backup into a read-only directory succeeded:\n{log}");
            attempts += 1;
        };
        set_mode(&dir, mode);
        assert_eq!(attempts, 3, "backoffLimit 2: three attempts");
        let pgc = self.kube.get("postgrescluster", CLUSTER).unwrap();
        let (status, reason, _) = self
            .condition(&pgc, "LastBackupSucceeded")
            .expect("LastBackupSucceeded");
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "BackoffLimitExceeded")
        );
        let message = failed["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("backup Job {job} (repo1 full) failed"))
                && message.contains(&format!("kubectl logs job/{job}")),
            "{failed}"
        );
        assert!(
            self.cluster_events(Some(CLUSTER), Some("BackupFailed"))
                .iter()
                .any(|e| e["message"].as_str().is_some_and(|m| m.contains(&job))),
            "a Warning Event names the failed Job"
        );
        figures.push(format!(
            "on-demand backup into a read-only repository: Failed after {attempts} attempts, LastBackupSucceeded=False ({reason}) {:.0} s after the request",
            t.elapsed().as_secs_f64()
        ));

        // Two requests at once: the second waits for the first's Job.
        let first = "repo1:incr@first";
        let second = "repo1:full@second";
        self.annotate_backup(first);
        let first_job = self.request_job(first);
        self.annotate_backup(second);
        let pending = wait_record(self, second, "Pending", 60);
        assert!(
            pending["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("waiting for backup Job {first_job}"))),
            "{pending}"
        );
        let second_job = pending["job"].as_str().unwrap().to_owned();
        assert!(
            self.kube.get("job", &second_job).is_none(),
            "{second_job} made while {first_job} runs"
        );
        let t = Instant::now();
        let (ok, first_log) = self.run_job_pod(&first_job);
        assert!(ok, "{first_job}:\n{first_log}");
        let started = self.request_job(second);
        assert_eq!(started, second_job);
        let (ok, second_log) = self.run_job_pod(&second_job);
        assert!(ok, "{second_job}:\n{second_log}");
        wait_record(self, second, "Succeeded", 60);
        assert_eq!(
            lock_conflict(&[first_log, second_log]),
            None,
            "pgBackRest met a held lock"
        );
        // The first request's Job is gone once the second's ran, its outcome an Event.
        wait_for(&format!("{first_job} deleted"), 60, || {
            self.kube.get("job", &first_job).is_none().then_some(())
        });
        assert!(
            self.cluster_events(Some(CLUSTER), Some("BackupSucceeded"))
                .iter()
                .any(|e| e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(first) && m.contains(&first_job))),
            "an Event says how {first} ended"
        );
        let pgc = self.kube.get("postgrescluster", CLUSTER).unwrap();
        let (status, _, _) = self.condition(&pgc, "LastBackupSucceeded").unwrap();
        assert_eq!(status, "True", "the next success flips LastBackupSucceeded");
        figures.push(format!(
            "two backup requests at once: run one after the other, {:.1} s for both, no lock conflict",
            t.elapsed().as_secs_f64()
        ));
    }
}

/// The permission bits of `path`, to put back after a test changed them.
fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every directory under `root` (itself included) with its mode, deepest first.
fn directories(root: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
        let mode = mode_of(&dir);
        out.push((dir, mode));
    }
    out.reverse();
    out
}

impl Harness {
    fn archiving(&self) -> (String, String, String) {
        let pgc = self.kube.get("postgrescluster", CLUSTER).unwrap();
        let c = pgc["status"]["conditions"]
            .as_array()
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c["type"] == "ContinuousArchiving")
                    .cloned()
            })
            .unwrap_or_default();
        let ready = self
            .condition(&pgc, "Ready")
            .map(|(s, r, _)| format!("{s}/{r}"))
            .unwrap_or_default();
        (
            c["status"].as_str().unwrap_or_default().to_owned(),
            c["message"].as_str().unwrap_or_default().to_owned(),
            ready,
        )
    }

    /// The repository's WAL directories made read-only: the primary's next push fails,
    /// `ContinuousArchiving` and `Ready` turn False; writable again, both turn True and the
    /// segments that waited are archived.
    pub fn archiving_failure(&mut self, figures: &mut Vec<String>) {
        let primary = self.su("dp-primary.dataplane.svc");
        wait_for("ContinuousArchiving True", 120, || {
            primary.query("SELECT pg_switch_wal()");
            (self.archiving().0 == "True").then_some(())
        });
        let modes = directories(&self.repo_dir("archive"));
        for (dir, _) in &modes {
            set_mode(dir, 0o555);
        }
        let failed_before: i64 = primary
            .query("SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap();
        let t = Instant::now();
        primary.query("CREATE TABLE IF NOT EXISTS archive_gap (n int)");
        primary.query("INSERT INTO archive_gap SELECT generate_series(1, 1000)");
        let stuck = primary.query("SELECT pg_walfile_name(pg_switch_wal())");
        let (_, message, _) = wait_for("ContinuousArchiving False", 120, || {
            let a = self.archiving();
            (a.0 == "False").then_some(a)
        });
        let noticed = t.elapsed();
        assert!(message.contains("archive-push of WAL segment"), "{message}");
        wait_for("Ready False (ArchivingFailed)", 30, || {
            let ready = self.archiving().2;
            ready.starts_with("False/ArchivingFailed").then_some(())
        });
        // The failure count is a metric too, for alerts.
        let failures =
            format!(r#"pgpilot_archive_failures{{namespace="{NAMESPACE}",cluster="{CLUSTER}"}}"#);
        wait_for("pgpilot_archive_failures above 0", 30, || {
            (self.operator.metric(&failures).ok()? > 0).then_some(())
        });
        let failed_now: i64 = primary
            .query("SELECT failed_count FROM pg_stat_archiver")
            .parse()
            .unwrap();
        assert!(failed_now > failed_before, "PostgreSQL saw no failure");
        assert!(
            self.cluster_events(Some(CLUSTER), Some("ArchivingFailed"))
                .iter()
                .any(|e| e["type"] == "Warning"),
            "a Warning Event ArchivingFailed"
        );

        for (dir, mode) in &modes {
            set_mode(dir, *mode);
        }
        // A client keeps writing, so new segments wake the archiver (left alone, it
        // retries a failed segment after up to a minute).
        let t = Instant::now();
        wait_for("ContinuousArchiving True again", 180, || {
            primary.query("INSERT INTO archive_gap VALUES (0)");
            primary.query("SELECT pg_switch_wal()");
            let a = self.archiving();
            (a.0 == "True" && a.2.starts_with("True")).then_some(())
        });
        let recovered = t.elapsed();
        wait_for("pgpilot_archive_failures back to 0", 30, || {
            (self.operator.metric(&failures).ok()? == 0).then_some(())
        });
        let last = primary.query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        assert!(
            last.as_str() >= stuck.as_str(),
            "{stuck} archived after the fix (last archived {last})"
        );
        figures.push(format!(
            "WAL archiving broken (repository read-only): ContinuousArchiving=False {:.1} s after the segment switch, then Ready=False; fixed: True again {:.1} s later with a client writing, the waiting segments archived",
            noticed.as_secs_f64(),
            recovered.as_secs_f64()
        ));
    }
}

/// `status.backups.repos[repo1].backups`, as stored.
fn listed(h: &Harness) -> (Value, Vec<Value>) {
    let inventory = h
        .kube
        .get("postgrescluster", CLUSTER)
        .map(|c| c["status"]["backups"].clone())
        .unwrap_or_default();
    let backups = inventory["repos"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "repo1"))
        .and_then(|r| r["backups"].as_array().cloned())
        .unwrap_or_default();
    (inventory, backups)
}

fn fulls(backups: &[Value]) -> Vec<String> {
    backups
        .iter()
        .filter(|b| b["type"] == "full")
        .filter_map(|b| b["label"].as_str().map(str::to_owned))
        .collect()
}

impl Harness {
    /// The inventory in status follows the backups taken, and pgBackRest's retention
    /// (`full: 2`, the resolved default) expires the oldest full backup when a third one is
    /// taken: the status stops listing it.
    pub fn inventory_and_retention(&mut self, figures: &mut Vec<String>) {
        // Two full and two incremental backups were taken on demand so far (and one that
        // failed).
        let (inventory, backups) = wait_for("status.backups lists two full backups", 120, || {
            let (i, b) = listed(self);
            (fulls(&b).len() == 2).then_some((i, b))
        });
        for b in &backups {
            for field in ["start", "stop", "walStart", "walStop"] {
                assert!(b[field].is_string(), "{field} of {b}");
            }
            for field in ["size", "repoSize", "repoDelta"] {
                assert!(b[field].as_i64().is_some_and(|n| n > 0), "{field} of {b}");
            }
        }
        let repo = &inventory["repos"][0];
        assert!(
            repo["walMin"].is_string() && repo["walMax"].is_string(),
            "{repo}"
        );
        let window = &inventory["recoveryWindow"];
        assert!(
            window["earliest"].as_str() <= window["latest"].as_str(),
            "{inventory}"
        );
        let before = fulls(&backups);
        // The newest full backup's completion, for alerts on its age.
        let newest_full = format!(
            r#"pgpilot_backup_last_success_timestamp_seconds{{namespace="{NAMESPACE}",cluster="{CLUSTER}",repo="repo1",type="full"}}"#
        );
        let at = self.operator.metric(&newest_full).expect(&newest_full);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            at > now - 3600 && at <= now,
            "{newest_full} = {at}, now {now}"
        );

        let (took, _) = self.request_backup("repo1:full@third");
        let t = Instant::now();
        let (after_inventory, after) = wait_for("the third full backup listed", 120, || {
            let (i, b) = listed(self);
            let f = fulls(&b);
            (f.len() == 2 && !f.contains(&before[0])).then_some((i, b))
        });
        let listed_in = t.elapsed();
        // The restore window follows: it starts at the end of the oldest backup kept.
        let earliest = |i: &Value| i["recoveryWindow"]["earliest"].as_str().map(str::to_owned);
        assert!(
            earliest(&after_inventory) > earliest(&inventory),
            "the window's start moved: {:?} then {:?}",
            earliest(&inventory),
            earliest(&after_inventory)
        );
        let now = fulls(&after);
        assert_eq!(
            now[0], before[1],
            "the newer of the two earlier fulls is kept"
        );
        // An incremental backup's label starts with its full backup's.
        assert!(
            after.iter().all(|b| !b["label"]
                .as_str()
                .unwrap_or_default()
                .starts_with(&before[0])),
            "the expired full's incremental backups went with it: {after:?}"
        );
        figures.push(format!(
            "inventory: status.backups listed the third full backup {:.1} s after its request was recorded ({:.1} s from the request), and no longer the oldest full (retention full: 2, expired by pgBackRest)",
            listed_in.as_secs_f64(),
            took.as_secs_f64()
        ));
    }
}
