//! A cluster created from another's backup (`spec.bootstrap.restore`): point-in-time
//! recovery into a new cluster, by the operator's restore Job and Patroni, with the real
//! pgBackRest reading the source's volume repository through the source's repository host.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::kube::wait_for;
use super::sql::Conn;
use super::{CLUSTER, Harness, NAMESPACE};

const CLONE: &str = "dpclone";
const LATEST: &str = "dplatest";

/// The backup directories (labels) of stanza `db` in a repository volume.
fn labels(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with('F') || n.ends_with('I') || n.ends_with('D'))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `status.restore` of the clone.
fn restore_record(h: &Harness) -> Value {
    h.kube
        .get("postgrescluster", CLONE)
        .map(|c| c["status"]["restore"].clone())
        .unwrap_or_default()
}

impl Harness {
    /// The clone restored in place to a time between a fourth and a fifth batch: the same
    /// name, Services and Secrets, clients reconnect with the same password, exactly the
    /// rows of the target on every instance; asking again with the same id does nothing.
    fn restore_in_place(&mut self, figures: &mut Vec<String>, leader: &str) {
        let password = self.kube.secret(&format!("{CLONE}-superuser"), "password");
        let service = format!("{CLONE}-primary.{NAMESPACE}.svc");
        let primary = Conn::new(&service, "postgres", &password, "postgres");
        // pgBackRest picks a backup that ended before the target in whole seconds.
        std::thread::sleep(Duration::from_millis(1100));
        primary.query("INSERT INTO clone_rows SELECT g, 4 FROM generate_series(1501, 1600) g");
        let before = primary.query(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        );
        std::thread::sleep(Duration::from_millis(1500));
        primary.query("INSERT INTO clone_rows SELECT g, 5 FROM generate_series(1601, 1650) g");
        self.archive_now(&primary);
        let timeline = self.patroni_state(leader).expect("state")["timeline"]
            .as_i64()
            .expect("a timeline");

        let t = Instant::now();
        let patch = json!({ "spec": { "restore": {
            "id": "before-5",
            "repo": "repo1",
            "target": { "type": "time", "value": before }
        } } });
        let (_, warnings) = self
            .kube
            .try_run_full(&[
                "patch",
                "postgrescluster",
                CLONE,
                "--type=merge",
                "-p",
                &patch.to_string(),
            ])
            .expect("the restore is admitted");
        assert!(
            warnings.contains("replaces the data of every instance")
                && warnings.contains(&format!("--target-timeline={timeline}")),
            "admission warns and says how to come back: {warnings}"
        );
        let job = pgpilot::names::in_place_restore_job(CLONE, "before-5");
        wait_for(&format!("Job {job}"), 180, || self.kube.get("job", &job));
        assert!(
            self.kube
                .list(
                    "pods",
                    &format!("pgpilot.io/cluster={CLONE},app.kubernetes.io/component=database")
                )
                .is_empty(),
            "every instance stopped before the restore Job"
        );
        let (ok, log) = self.run_job_pod(&job);
        assert!(ok, "the in-place restore Job failed:\n{log}");
        // The restored instance starts alone (the kubelet starts the recreated pod), and
        // is backed up before the other is created again from it.
        let backup = pgpilot::names::in_place_backup_job(CLONE, "before-5");
        wait_for(&format!("Job {backup}"), 180, || {
            self.kube.get("job", &backup)
        });
        let (ok, log) = self.run_job_pod(&backup);
        assert!(ok, "the backup after the restore failed:\n{log}");
        let record = wait_for("status.restore Succeeded", 300, || {
            let r = restore_record(self);
            assert_ne!(r["phase"], "Failed", "{r}");
            (r["phase"] == "Succeeded").then_some(r)
        });
        let took = t.elapsed();
        assert_eq!(record["id"], "before-5");

        // The same Service and password; the rows of the target on every instance.
        let rows = wait_for("the primary through its Service", 60, || {
            primary
                .try_query("SELECT count(*) || ' ' || max(batch) FROM clone_rows")
                .ok()
        });
        assert_eq!(rows, "1600 4", "batches 1, 2 and 4; not 5");
        let restored = record["timeline"].as_i64().expect("the restored timeline");
        assert!(
            restored > timeline,
            "a new timeline: {restored} after {timeline}"
        );
        // Where recovery stopped, as the restored timeline's history file has it.
        let history = primary.query(&format!(
            "SELECT pg_read_file('pg_wal/{restored:08X}.history')"
        ));
        let switch = history
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .and_then(|l| l.split_whitespace().nth(1))
            .expect("a line in the history file");
        assert_eq!(record["reachedLsn"], switch, "{history}");
        for pod in [format!("{CLONE}-0"), format!("{CLONE}-1")] {
            let on = Conn::new(&self.kubelet.ip(&pod), "postgres", &password, "postgres");
            let rows = wait_for(&format!("{pod} caught up"), 60, || {
                let r = on.try_query("SELECT count(*) FROM clone_rows").ok()?;
                (r == "1600").then_some(r)
            });
            assert_eq!(rows, "1600", "{pod}");
        }
        assert_eq!(
            self.kube.secret(&format!("{CLONE}-superuser"), "password"),
            password,
            "the Secret is kept"
        );

        // The same id again: nothing.
        let uids: Vec<Value> = self
            .kube
            .list(
                "pods",
                &format!("pgpilot.io/cluster={CLONE},app.kubernetes.io/component=database"),
            )
            .iter()
            .map(|p| p["metadata"]["uid"].clone())
            .collect();
        self.kube.run(&[
            "patch",
            "postgrescluster",
            CLONE,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ]);
        self.wait_for_resyncs(2);
        let again: Vec<Value> = self
            .kube
            .list(
                "pods",
                &format!("pgpilot.io/cluster={CLONE},app.kubernetes.io/component=database"),
            )
            .iter()
            .map(|p| p["metadata"]["uid"].clone())
            .collect();
        assert_eq!(again, uids, "no instance replaced by asking again");
        assert_eq!(restore_record(self), record, "the record is unchanged");
        figures.push(format!(
            "in place (spec.restore, id before-5): Succeeded {:.1} s after kubectl patch (instances stopped, volume restored, the restored instance leading and backed up, the replica created again); 1600 rows of the target through the same Service and password, timeline {timeline} → {restored} from LSN {switch}; the same id again did nothing",
            took.as_secs_f64()
        ));
    }

    /// Waits until every WAL segment written so far on `primary` is archived.
    pub fn archive_now(&self, primary: &Conn) {
        let wal = primary.query("SELECT pg_walfile_name(pg_switch_wal())");
        wait_for("the last WAL segment archived", 60, || {
            let last =
                primary.query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            (last.as_str() >= wal.as_str()).then_some(())
        });
    }

    fn clone_condition(&self) -> Value {
        self.kube
            .get("postgrescluster", CLONE)
            .and_then(|c| {
                c["status"]["conditions"]
                    .as_array()?
                    .iter()
                    .find(|c| c["type"] == "Bootstrapped")
                    .cloned()
            })
            .unwrap_or_default()
    }

    /// Rows in three batches on the source, a backup after the first, a time between the
    /// second and the third; a new cluster created from the source's repository to that
    /// time holds exactly the first two, on a new timeline, as a two-instance HA cluster
    /// with its own passwords; the source is untouched; the new cluster's first backup
    /// goes to its own repository.
    pub fn clone_from_backup(&mut self, figures: &mut Vec<String>) {
        let primary = self.su(&format!("{CLUSTER}-primary.{NAMESPACE}.svc"));
        primary.query("CREATE TABLE clone_rows (n int PRIMARY KEY, batch int)");
        primary.query("INSERT INTO clone_rows SELECT g, 1 FROM generate_series(1, 1000) g");
        self.request_backup("repo1:incr@clone");
        // pgBackRest picks a backup that ended before the target in whole seconds.
        std::thread::sleep(Duration::from_millis(1100));
        primary.query("INSERT INTO clone_rows SELECT g, 2 FROM generate_series(1001, 1500) g");
        let between = primary.query(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        );
        std::thread::sleep(Duration::from_millis(1500));
        primary.query("INSERT INTO clone_rows SELECT g, 3 FROM generate_series(1501, 1700) g");
        self.archive_now(&primary);
        let leader = self.current_leader();
        let source_timeline = self.patroni_state(&leader).expect("the leader's state")["timeline"]
            .as_i64()
            .expect("a timeline");
        let source_backups = labels(&self.repo_dir("backup"));

        let t = Instant::now();
        let spec = json!({
            "apiVersion": "pgpilot.io/v1",
            "kind": "PostgresCluster",
            "metadata": { "name": CLONE },
            "spec": {
                "postgresVersion": 15,
                "instances": 2,
                "storage": { "size": "1Gi" },
                "resources": { "requests": { "cpu": "100m", "memory": "256Mi" }, "limits": { "memory": "256Mi" } },
                "bootstrap": { "restore": {
                    "cluster": CLUSTER,
                    "repo": "repo1",
                    "target": { "type": "time", "value": between }
                } },
                "backup": { "pgbackrest": { "repos": [
                    { "name": "repo1", "volume": { "size": "1Gi" }, "schedules": { "full": "0 1 * * 0" } }
                ] } },
                // A role the source has too, and the pooler: both work on the clone with
                // the clone's own Secrets.
                "users": [{ "name": "app_reader", "databases": ["app"] }],
                "databases": [{ "name": "app" }],
                "pooler": { "enabled": true, "instances": 1 }
            }
        });
        let (_, warnings) = self
            .kube
            .try_apply(&spec.to_string())
            .expect("the clone is admitted");
        assert!(
            warnings.contains(&format!("Job {CLONE}-restore restores it")),
            "admission announces the restore: {warnings}"
        );
        // The stored spec shows the exact restore.
        let stored = self.kube.get("postgrescluster", CLONE).expect("the clone");
        let options = &stored["spec"]["bootstrap"]["restore"]["options"];
        // UTC, a space for the `T`, `+00`, and no trailing zeros in the fraction.
        let (seconds, fraction) = between
            .trim_end_matches('Z')
            .split_once('.')
            .expect("a fraction");
        let fraction = fraction.trim_end_matches('0');
        let utc = format!(
            "{}{}{fraction}+00",
            seconds.replacen('T', " ", 1),
            if fraction.is_empty() { "" } else { "." }
        );
        assert_eq!(
            *options,
            json!({ "type": "time", "target": utc, "target-action": "promote", "target-exclusive": "n" }),
            "resolved restore options"
        );

        // The repository host runs at once; the instances wait for the restore Job.
        let host = format!("{CLONE}-repo-host-0");
        wait_for(&format!("pod {host}"), 60, || self.kube.get("pod", &host));
        let ip = self.take_ip();
        self.kubelet.start_pod(&host, &ip);
        let job = format!("{CLONE}-restore");
        wait_for(&format!("Job {job}"), 60, || self.kube.get("job", &job));
        assert!(
            self.kube.get("statefulset", CLONE).is_none(),
            "the instances wait for the restore"
        );
        let condition = self.clone_condition();
        assert_eq!(condition["reason"], "Restoring", "{condition}");
        let run = Instant::now();
        let (ok, log) = self.run_job_pod(&job);
        let run = run.elapsed();
        assert!(ok, "the restore Job failed:\n{log}");
        assert!(log.contains("recovered and promoted"), "{log}");
        assert!(!log.contains(&self.kube.secret(&format!("{CLONE}-superuser"), "password")));

        // The restored instance starts alone: an empty one beside it could race it to
        // Patroni's initialize key and bootstrap an empty cluster.
        let (first, second) = (format!("{CLONE}-0"), format!("{CLONE}-1"));
        let sts = wait_for("the clone's StatefulSet", 60, || {
            self.kube.get("statefulset", CLONE)
        });
        assert_eq!(
            sts["spec"]["replicas"], 1,
            "one instance until the restored one leads"
        );
        wait_for(&format!("pod {first}"), 60, || self.kube.get("pod", &first));
        let ip = self.take_ip();
        self.kubelet.start_pod(&first, &ip);
        let clone_leader = wait_for("the restored instance leading", 180, || {
            self.leader(&[first.as_str()])
        });
        wait_for(&format!("pod {second}"), 120, || {
            self.kube.get("pod", &second)
        });
        let ip = self.take_ip();
        self.kubelet.start_pod(&second, &ip);
        // Its own passwords: the Job gave the restored roles the clone's Secrets.
        let password = self.kube.secret(&format!("{CLONE}-superuser"), "password");
        let su = Conn::new(
            &self.kubelet.ip(&clone_leader),
            "postgres",
            &password,
            "postgres",
        );
        wait_for("the clone's replica streaming", 180, || {
            (su.try_query("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                .ok()?
                == "1")
                .then_some(())
        });
        let roles = wait_for("the clone's roles Job's pod", 60, || {
            self.kube
                .list(
                    "pods",
                    &format!("pgpilot.io/cluster={CLONE},app.kubernetes.io/component=roles"),
                )
                .first()
                .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        });
        let ip = self.take_ip();
        let (ok, log) = self.kubelet.run_to_completion(&roles, &ip);
        assert!(ok, "the clone's roles Job:\n{log}");
        wait_for("the clone Ready", 180, || {
            let c = self.kube.get("postgrescluster", CLONE)?;
            let ready = c["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            ready.then_some(())
        });
        let ready = t.elapsed();
        let condition = self.clone_condition();
        assert_eq!(
            (condition["status"].as_str(), condition["reason"].as_str()),
            (Some("True"), Some("Restored")),
            "{condition}"
        );

        // The roles the source had, with the clone's passwords: the user through the
        // pooler, the exporter's role; the source's password no longer opens either.
        let pooler = wait_for("the clone's pooler pod", 60, || {
            self.kube
                .list(
                    "pods",
                    &format!("pgpilot.io/cluster={CLONE},app.kubernetes.io/component=pooler"),
                )
                .first()
                .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        });
        let ip = self.take_ip();
        self.kubelet.start_pod(&pooler, &ip);
        let pooled = Conn {
            password: self
                .kube
                .secret(&format!("{CLONE}-user-app-reader"), "password"),
            ..self.pooled(&format!("{CLONE}-pooler.{NAMESPACE}.svc"))
        };
        wait_for("the clone's pooler answering", 60, || {
            pooled.try_query("SELECT 1").ok()
        });
        let old = Conn {
            password: self
                .kube
                .secret(&format!("{CLUSTER}-user-app-reader"), "password"),
            ..pooled.clone()
        };
        old.try_query("SELECT 1")
            .expect_err("the source's password of app_reader opens the clone");
        let monitor = Conn::new(
            &self.kubelet.ip(&clone_leader),
            "pgpilot_monitor",
            &self.kube.secret(&format!("{CLONE}-exporter"), "password"),
            "postgres",
        );
        assert_eq!(
            monitor.query("SELECT 1"),
            "1",
            "the exporter's role logs in"
        );

        let rows = su.query("SELECT count(*) || ' ' || max(batch) FROM clone_rows");
        assert_eq!(rows, "1500 2", "the clone holds batches 1 and 2, not 3");
        let timeline = self.patroni_state(&clone_leader).expect("state")["timeline"]
            .as_i64()
            .expect("a timeline");
        assert!(
            timeline > source_timeline,
            "a new timeline: {timeline} after {source_timeline}"
        );
        // The source is untouched.
        assert_eq!(primary.query("SELECT count(*) FROM clone_rows"), "1700");
        let leader_now = self.current_leader();
        assert_eq!(
            self.patroni_state(&leader_now).expect("state")["timeline"].as_i64(),
            Some(source_timeline),
            "the source's timeline"
        );

        // The clone's first backup goes to its own repository, never the source's.
        self.kube.run(&[
            "annotate",
            "postgrescluster",
            CLONE,
            "pgpilot.io/backup=repo1:full@first",
        ]);
        let backup_job = wait_for("the clone's backup Job", 60, || {
            let c = self.kube.get("postgrescluster", CLONE)?;
            let r = &c["status"]["lastBackup"];
            (r["phase"] == "Running").then(|| r["job"].as_str().map(str::to_owned))?
        });
        let (ok, log) = self.run_job_pod(&backup_job);
        assert!(ok, "the clone's first backup:\n{log}");
        let own = self
            .root
            .join("volumes")
            .join(format!("repo1-{CLONE}-repo-host-0"))
            .join("backup")
            .join("db");
        assert_eq!(
            labels(&own).len(),
            1,
            "one backup in the clone's repository"
        );
        assert_eq!(
            labels(&self.repo_dir("backup")),
            source_backups,
            "the source's repository unchanged"
        );

        figures.push(format!(
            "clone to a point in time (spec.bootstrap.restore, volume repository through the source's repository host): Ready {:.1} s after kubectl apply, the restore Job's pod ran {:.1} s; 1500 of 1700 rows, timeline {source_timeline} → {timeline}; the roles, the pooler and the exporter's role with the clone's passwords; its first full backup in its own repository",
            ready.as_secs_f64(),
            run.as_secs_f64()
        ));

        self.restore_in_place(figures, &clone_leader);

        // To the end of the archive (the default target), one instance, no repository.
        let t = Instant::now();
        let latest = json!({
            "apiVersion": "pgpilot.io/v1",
            "kind": "PostgresCluster",
            "metadata": { "name": LATEST },
            "spec": {
                "postgresVersion": 15,
                "instances": 1,
                "storage": { "size": "1Gi" },
                "resources": { "requests": { "cpu": "100m", "memory": "256Mi" }, "limits": { "memory": "256Mi" } },
                "bootstrap": { "restore": { "cluster": CLUSTER, "repo": "repo1" } }
            }
        });
        self.kube
            .try_apply(&latest.to_string())
            .expect("the second clone is admitted");
        let stored = self.kube.get("postgrescluster", LATEST).expect("stored");
        assert_eq!(
            stored["spec"]["bootstrap"]["restore"]["options"],
            json!({ "type": "default" }),
            "latest resolves to pgBackRest's default type"
        );
        let job = format!("{LATEST}-restore");
        wait_for(&format!("Job {job}"), 60, || self.kube.get("job", &job));
        let (ok, log) = self.run_job_pod(&job);
        assert!(ok, "the second restore Job failed:\n{log}");
        let first = format!("{LATEST}-0");
        wait_for(&format!("pod {first}"), 120, || {
            self.kube.get("pod", &first)
        });
        let ip = self.take_ip();
        self.kubelet.start_pod(&first, &ip);
        wait_for("the second clone leading", 180, || {
            self.leader(&[first.as_str()])
        });
        let password = self.kube.secret(&format!("{LATEST}-superuser"), "password");
        let su = Conn::new(&self.kubelet.ip(&first), "postgres", &password, "postgres");
        let rows = wait_for("the second clone's rows", 60, || {
            su.try_query("SELECT count(*) || ' ' || max(batch) FROM clone_rows")
                .ok()
        });
        assert_eq!(rows, "1700 3", "every archived row");
        figures.push(format!(
            "clone to the end of the archive (target latest): leader {:.1} s after kubectl apply, 1700 of 1700 rows",
            t.elapsed().as_secs_f64()
        ));

        // Gone again, so that the scenarios after this one run beside one cluster only.
        for clone in [CLONE, LATEST] {
            self.kube
                .run(&["delete", "postgrescluster", clone, "--wait=false"]);
        }
        for clone in [CLONE, LATEST] {
            wait_for(&format!("the pods of {clone} gone"), 180, || {
                self.kube
                    .list("pods", &format!("pgpilot.io/cluster={clone}"))
                    .is_empty()
                    .then_some(())
            });
        }
    }
}
