//! Day 2 on the real data plane: edits of the running cluster, made with `kubectl patch`
//! through the admission webhook, reach the running processes. Reload-only settings go
//! live with no restart; `synchronousMode` switches; restart-only settings are restarted
//! into, replicas first when they rise and the primary first when they fall; an
//! unchanged cluster costs no write; new replicas stream after a scale-out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::kube::wait_for;
use super::sql::{Conn, Session};
use super::{CLUSTER, Harness};

const MEMBERS: [&str; 3] = ["dp-0", "dp-1", "dp-2"];

/// A client writing through the primary Service, one row per transaction, reconnecting
/// when the connection breaks; it records the last acknowledged row and the longest time
/// between two acknowledgements (the write unavailability a client sees).
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    longest_gap: Arc<Mutex<Duration>>,
    thread: Option<std::thread::JoinHandle<()>>,
    table: String,
}

impl Writer {
    pub fn start(conn: Conn, table: &str) -> Writer {
        conn_query(
            &conn,
            &format!("CREATE TABLE IF NOT EXISTS {table} (n bigint PRIMARY KEY)"),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let thread = {
            let (stop, acked, gap, table) = (
                stop.clone(),
                acked.clone(),
                longest_gap.clone(),
                table.to_owned(),
            );
            std::thread::spawn(move || {
                let mut last = Instant::now();
                let mut n = 1u64;
                while !stop.load(Ordering::SeqCst) {
                    let mut s = Session::open(&conn);
                    // An insert whose answer was lost may have committed: the retry of
                    // the same row must answer, not fail.
                    while !stop.load(Ordering::SeqCst) {
                        let sql = format!(
                            "INSERT INTO {table} VALUES ({n}) ON CONFLICT (n) DO UPDATE SET n = EXCLUDED.n RETURNING n;"
                        );
                        match s.one(&sql) {
                            Some(v) if v == n.to_string() => {
                                acked.store(n, Ordering::SeqCst);
                                let mut g = gap.lock().unwrap();
                                *g = (*g).max(last.elapsed());
                                last = Instant::now();
                                n += 1;
                            }
                            _ => break,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Writer {
            stop,
            acked,
            longest_gap,
            thread: Some(thread),
            table: table.to_owned(),
        }
    }

    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops; returns (rows acknowledged, rows lost, longest write gap).
    pub fn finish(mut self, primary: &Conn) -> (u64, u64, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("writer");
        }
        let acked = self.acked();
        let present: u64 = conn_query(
            primary,
            &format!("SELECT count(*) FROM {} WHERE n <= {acked}", self.table),
        )
        .parse()
        .expect("a count");
        let gap = *self.longest_gap.lock().unwrap();
        (acked, acked - present, gap)
    }
}

fn conn_query(conn: &Conn, sql: &str) -> String {
    wait_for(&format!("{sql} on {}", conn.host), 60, || {
        conn.try_query(sql).ok()
    })
}

impl Harness {
    fn cluster(&self) -> Value {
        self.kube
            .get("postgrescluster", CLUSTER)
            .expect("the cluster")
    }

    /// `kubectl patch pgc dp --type merge`, as a user types it; returns what kubectl
    /// printed on standard error (the webhook's warnings).
    pub fn edit(&self, patch: Value) -> String {
        self.edit_cluster(CLUSTER, patch)
    }

    /// The same for any cluster.
    pub fn edit_cluster(&self, cluster: &str, patch: Value) -> String {
        let out = self
            .kube
            .try_run_full(&[
                "patch",
                "postgrescluster",
                cluster,
                "--type",
                "merge",
                "-p",
                &patch.to_string(),
            ])
            .unwrap_or_else(|e| panic!("kubectl patch {cluster} {patch}: {e}"));
        out.1
    }

    /// How many times Events about PostgresClusters (`cluster`, or any) with `reason` (or
    /// any) occurred: a recorder folds repeats into one Event with a count.
    pub fn occurrences(&self, cluster: Option<&str>, reason: Option<&str>) -> u64 {
        self.cluster_events(cluster, reason)
            .iter()
            .map(|e| {
                e["count"]
                    .as_u64()
                    .or(e["series"]["count"].as_u64())
                    .unwrap_or(1)
            })
            .sum()
    }

    /// `kind/name: record` for each child of the dp cluster of these kinds.
    pub fn child_records(&self, kinds: &[&str], record: impl Fn(&Value) -> String) -> Vec<String> {
        let mut v = Vec::new();
        for kind in kinds {
            for o in self
                .kube
                .list(kind, &format!("pgpilot.io/cluster={CLUSTER}"))
            {
                v.push(format!(
                    "{kind}/{}: {}",
                    o["metadata"]["name"].as_str().unwrap_or_default(),
                    record(&o)
                ));
            }
        }
        v
    }

    /// Events about PostgresClusters (`cluster`, or any) with `reason` (or any).
    pub fn cluster_events(&self, cluster: Option<&str>, reason: Option<&str>) -> Vec<Value> {
        self.kube
            .list("events", "")
            .into_iter()
            .filter(|e| {
                e["involvedObject"]["kind"] == "PostgresCluster"
                    && cluster.is_none_or(|c| e["involvedObject"]["name"] == c)
                    && reason.is_none_or(|r| e["reason"] == r)
            })
            .collect()
    }

    pub fn condition(&self, pgc: &Value, type_: &str) -> Option<(String, String, i64)> {
        let c = pgc["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)?
            .clone();
        Some((
            c["status"].as_str()?.to_owned(),
            c["reason"].as_str().unwrap_or_default().to_owned(),
            c["observedGeneration"].as_i64().unwrap_or(-1),
        ))
    }

    /// Waits until the operator reports the current generation's configuration applied
    /// and the cluster Ready.
    pub fn wait_applied(&self, what: &str, secs: u64) {
        wait_for(&format!("{what}: ConfigApplied and Ready"), secs, || {
            let pgc = self.cluster();
            let generation = pgc["metadata"]["generation"].as_i64()?;
            let applied = self.condition(&pgc, "ConfigApplied")?;
            let ready = self.condition(&pgc, "Ready")?;
            (applied.0 == "True" && applied.2 == generation && ready.0 == "True").then_some(())
        });
    }

    fn on_member(&self, member: &str, sql: &str) -> Option<String> {
        self.su(&self.kubelet.ip(member)).try_query(sql).ok()
    }

    /// `SHOW name` on every member, once all agree on `value`.
    fn wait_setting(&self, name: &str, value: &str, secs: u64) -> Duration {
        let t = Instant::now();
        wait_for(&format!("{name} = {value} on every member"), secs, || {
            MEMBERS
                .iter()
                .all(|m| self.on_member(m, &format!("SHOW {name}")).as_deref() == Some(value))
                .then_some(())
        });
        t.elapsed()
    }

    fn start_times(&self) -> BTreeMap<String, String> {
        MEMBERS
            .iter()
            .map(|m| {
                let t = wait_for(&format!("{m}'s postmaster start time"), 60, || {
                    self.on_member(m, "SELECT extract(epoch FROM pg_postmaster_start_time())")
                });
                (m.to_string(), t)
            })
            .collect()
    }

    /// Pod name → UID of those of `members` that exist.
    pub fn pod_uids(&self, members: &[&str]) -> BTreeMap<String, String> {
        self.pods_meta(members)
            .into_iter()
            .map(|(m, (uid, _))| (m, uid))
            .collect()
    }

    fn pg_hba(&self) -> Vec<String> {
        self.cluster()["spec"]["postgresql"]["pgHba"]
            .as_array()
            .expect("a resolved pgHba")
            .iter()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect()
    }

    /// A reload-only parameter and a pg_hba rule go live on every member with no restart.
    pub fn live_configuration(&mut self, figures: &mut Vec<String>) {
        self.wait_applied("the new cluster", 120);
        let loop_wait = self.cluster()["spec"]["patroni"]["loopWait"]
            .as_u64()
            .unwrap_or(10);
        let owner = Conn::new(
            "dp-primary.dataplane.svc",
            "app_owner",
            &self.kube.secret("dp-user-app-owner", "password"),
            "app",
        );
        owner.query("SELECT 1");
        let (uids, started) = (self.pod_uids(&MEMBERS), self.start_times());
        let mut hba = self.pg_hba();
        hba.insert(0, "host all app_owner 0.0.0.0/0 reject".into());
        let t = Instant::now();
        self.edit(json!({ "spec": { "postgresql": {
            "parameters": { "work_mem": "7MB" },
            "pgHba": hba
        } } }));
        self.wait_setting("work_mem", "7MB", 120);
        let live = t.elapsed();
        let refused = wait_for("app_owner refused by the new pg_hba rule", 60, || {
            owner.try_query("SELECT 1").err()
        });
        assert!(
            refused.contains("pg_hba.conf rejects connection"),
            "{refused}"
        );
        self.wait_applied("work_mem and pg_hba", 60);
        assert_eq!(self.pod_uids(&MEMBERS), uids, "a reload replaced a pod");
        assert_eq!(self.start_times(), started, "a reload restarted PostgreSQL");
        figures.push(format!(
            "reload-only edit (work_mem, a pg_hba rule) live on all 3 members: {:.1} s after kubectl patch (loopWait {loop_wait} s), no pod replaced, no PostgreSQL restarted",
            live.as_secs_f64()
        ));
    }

    /// The operator SIGKILLed in the middle of carrying an edit out: the edit applied to
    /// the `dp-patroni` ConfigMap, the request to the leader's Patroni under way (Patroni
    /// frozen with SIGSTOP, so it cannot have been answered). The next process compares
    /// again and sends it: the setting reaches every member, no pod replaced, no restart.
    pub fn config_patch_interrupted(&mut self, figures: &mut Vec<String>) {
        let version = || {
            self.kube
                .get("configmap", "dp-patroni")
                .and_then(|c| c["metadata"]["resourceVersion"].as_str().map(str::to_owned))
        };
        let (uids, started) = (self.pod_uids(&MEMBERS), self.start_times());
        let leader = self.current_leader();
        let before = version().expect("the dp-patroni ConfigMap");
        self.kubelet
            .signal_container(&leader, "postgres", "patroni", "STOP");
        assert!(
            self.patroni_state(&leader).is_none(),
            "{leader}'s Patroni still answers while stopped"
        );
        let t = Instant::now();
        self.edit(json!({ "spec": { "postgresql": { "parameters": { "work_mem": "9MB" } } } }));
        wait_for("the edit applied to dp-patroni", 60, || {
            version().filter(|v| *v != before)
        });
        // The operator is now waiting on the frozen Patroni (or about to).
        std::thread::sleep(Duration::from_secs(1));
        self.operator.kill();
        self.kubelet
            .signal_container(&leader, "postgres", "patroni", "CONT");
        let frozen = t.elapsed();
        // Whatever the dead operator left queued in Patroni's socket is answered now.
        std::thread::sleep(Duration::from_secs(2));
        assert_ne!(
            self.patroni_config(&leader)["postgresql"]["parameters"]["work_mem"],
            "9MB",
            "the killed operator's change reached Patroni: the kill missed the window"
        );
        let t = Instant::now();
        self.operator
            .start_again()
            .unwrap_or_else(|e| panic!("restarting the operator: {e}"));
        self.wait_setting("work_mem", "9MB", 180);
        let live = t.elapsed();
        self.wait_applied("work_mem after the kill", 60);
        assert_eq!(self.pod_uids(&MEMBERS), uids, "a reload replaced a pod");
        assert_eq!(self.start_times(), started, "a reload restarted PostgreSQL");
        figures.push(format!(
            "operator SIGKILLed with an edit applied to the ConfigMap and its request to the leader's Patroni unanswered (Patroni frozen {:.1} s): the next process sent it, work_mem live on all 3 members {:.1} s after it started (waiting out the dead one's 15 s Lease), no pod replaced, no restart",
            frozen.as_secs_f64(),
            live.as_secs_f64()
        ));
    }

    /// `GET /config` on a member: Patroni's dynamic configuration as stored in the DCS.
    fn patroni_config(&self, member: &str) -> Value {
        self.patroni_get(member, "/config", 5)
            .and_then(|body| serde_json::from_slice(&body).ok())
            .unwrap_or_default()
    }

    fn sync_standbys(&self, leader: &str) -> usize {
        self.on_member(
            leader,
            "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
        )
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
    }

    /// `synchronousMode` switched on the running cluster: async, then sync again (the
    /// failover that follows checks that sync loses no acknowledged row).
    pub fn replication_mode(&mut self, figures: &mut Vec<String>) {
        let leader = self.current_leader();
        assert_eq!(self.sync_standbys(&leader), 1, "sync mode at the start");
        let t = Instant::now();
        self.edit(json!({ "spec": { "patroni": { "synchronousMode": "async" } } }));
        wait_for("no synchronous standby in async mode", 90, || {
            (self.sync_standbys(&leader) == 0).then_some(())
        });
        let to_async = t.elapsed();
        self.wait_applied("async", 60);
        let t = Instant::now();
        self.edit(json!({ "spec": { "patroni": { "synchronousMode": "sync" } } }));
        wait_for("a synchronous standby again", 90, || {
            (self.sync_standbys(&leader) == 1).then_some(())
        });
        let to_sync = t.elapsed();
        self.wait_applied("sync", 60);
        figures.push(format!(
            "synchronousMode on the running cluster: sync → async {:.1} s, async → sync {:.1} s (pg_stat_replication)",
            to_async.as_secs_f64(),
            to_sync.as_secs_f64()
        ));
    }

    /// A restart-only parameter raised, then lowered: every member ends with the value,
    /// in the safe order, while a client keeps writing.
    pub fn restart_parameters(&mut self, figures: &mut Vec<String>) {
        let primary = self.su("dp-primary.dataplane.svc");
        for (value, lowered) in [("200", false), ("50", true)] {
            let leader = self.current_leader();
            let before = self.start_times();
            let writer = Writer::start(primary.clone(), "restart_writes");
            wait_for("the writer running", 60, || {
                (writer.acked() > 50).then_some(())
            });
            let t = Instant::now();
            let warnings = self.edit(
                json!({ "spec": { "postgresql": { "parameters": { "max_connections": value } } } }),
            );
            self.wait_setting("max_connections", value, 300);
            self.wait_applied(&format!("max_connections {value}"), 120);
            let took = t.elapsed();
            let (acked, lost, gap) = writer.finish(&primary);
            // Admission said what the edit would do, in the order it then happened.
            let order = if lowered {
                "the primary restarts first"
            } else {
                "replicas restart first"
            };
            assert!(
                warnings.contains("spec.postgresql.parameters[max_connections]")
                    && warnings.contains(order),
                "kubectl printed no restart warning: {warnings}"
            );
            let after = self.start_times();
            for m in MEMBERS {
                assert_ne!(before[m], after[m], "{m} was not restarted");
            }
            // Members in the order their PostgreSQL started.
            let mut order: Vec<(f64, &str)> = after
                .iter()
                .map(|(m, t)| (t.parse().expect("an epoch"), m.as_str()))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (earliest, latest) = (order[0].1, order[order.len() - 1].1);
            if lowered {
                assert_eq!(
                    earliest, leader,
                    "a lowered max_connections restarts the primary first"
                );
            } else {
                assert_eq!(
                    latest, leader,
                    "a raised max_connections restarts the primary last"
                );
            }
            assert_eq!(lost, 0, "acknowledged rows lost during the restarts");
            assert_eq!(self.current_leader(), leader, "a restart is not a failover");
            // A restarted standby is streaming again before Patroni has named the
            // synchronous one anew; until it has, sync mode promotes nobody (it cannot know
            // who holds every acknowledged commit). Settled before the next step.
            let replicas: Vec<&str> = MEMBERS.iter().copied().filter(|m| *m != leader).collect();
            self.check_topology(&leader, &replicas);
            figures.push(format!(
                "max_connections → {value} ({}): every member restarted in {:.1} s, {} first; {acked} rows acknowledged, 0 lost, longest write gap {:.1} s; kubectl warned: {}",
                if lowered { "lowered" } else { "raised" },
                took.as_secs_f64(),
                if lowered { "the primary" } else { "the replicas" },
                gap.as_secs_f64(),
                warnings
                    .lines()
                    .find(|l| l.contains("max_connections"))
                    .unwrap_or_default()
                    .trim()
            ));
        }
    }

    /// An unchanged, running cluster: over several resyncs the operator writes nothing,
    /// to the API server (status, events, children) or to Patroni (configuration,
    /// restarts).
    pub fn steady_state(&mut self, figures: &mut Vec<String>) {
        self.wait_applied("before the quiet window", 120);
        let version = |kind: &str, name: &str| {
            self.kube
                .get(kind, name)
                .map(|o| o["metadata"]["resourceVersion"].clone())
        };
        // Writes to the objects themselves, by manager: the controllers' own status updates
        // (a CronJob's schedule coming due in the window) are not the operator's.
        let children = || self.children_versions();
        let events = || self.occurrences(None, None);
        // Quiet first: no WAL in flight, so no member's published position moves.
        self.su("dp-primary.dataplane.svc").query("CHECKPOINT");
        wait_for("every replica caught up in status.members", 120, || {
            let pgc = self.cluster();
            let members = pgc["status"]["members"].as_array()?.clone();
            members
                .iter()
                .filter(|m| m["role"] != "primary")
                .all(|m| m["lagBytes"].as_i64() == Some(0))
                .then_some(())
        });
        self.wait_applied("caught up", 60);
        let (pgc, config, kids, evs, started) = (
            version("postgrescluster", CLUSTER),
            version("endpoints", "dp-config"),
            children(),
            events(),
            self.start_times(),
        );
        // Four rounds of resyncs (every 5 s here), counted in the operator's metrics.
        self.wait_for_resyncs(4);
        assert_eq!(
            version("postgrescluster", CLUSTER),
            pgc,
            "the cluster (status) was written"
        );
        assert_eq!(
            version("endpoints", "dp-config"),
            config,
            "Patroni's configuration was written"
        );
        assert_eq!(children(), kids, "a child object was written");
        assert_eq!(events(), evs, "an event was raised");
        assert_eq!(self.start_times(), started, "a member was restarted");
        figures.push(
            "steady state: four rounds of resyncs (every 5 s, counted), no write to the API server (status, events, children) or to Patroni (configuration, restarts)".into(),
        );
    }

    /// More instances on the running cluster: the new replicas start and stream.
    pub fn scale_out(&mut self, figures: &mut Vec<String>) {
        let t = Instant::now();
        self.edit(json!({ "spec": { "instances": 5 } }));
        for pod in ["dp-3", "dp-4"] {
            wait_for(&format!("pod {pod}"), 60, || self.kube.get("pod", pod));
            let ip = self.take_ip();
            self.kubelet.start_pod(pod, &ip);
        }
        let leader = self.current_leader();
        let streaming = wait_for("four streaming replicas", 300, || {
            let n: usize = self
                .on_member(
                    &leader,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )?
                .parse()
                .ok()?;
            (n == 4).then_some(n)
        });
        wait_for("status: five members, 5/5 ready", 120, || {
            let pgc = self.cluster();
            (pgc["status"]["members"].as_array().map(Vec::len) == Some(5)
                && pgc["status"]["instances"]["ready"] == 5)
                .then_some(())
        });
        figures.push(format!(
            "scale-out 3 → 5 on the running cluster: {streaming} replicas streaming, status lists 5 members, {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
}
