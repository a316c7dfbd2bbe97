//! The operator is not a single point of failure: with it stopped, the cluster still fails
//! over (Patroni), replaces a deleted pod (the StatefulSet controller), takes a backup (a
//! Job) and pools connections (pgBouncer); started again, the operator writes nothing but
//! the cluster's status, which catches up.

use std::time::{Duration, Instant};

use super::day2::Writer;
use super::kube::wait_for;
use super::{CLUSTER, Harness};

impl Harness {
    /// Every write to a child of the cluster other than a status update (which the
    /// workload controllers make): `kind/name` with its `managedFields` entries outside
    /// the status subresource (manager, operation, time), which any write moves.
    /// Per child, each manager's last write outside subresources (`status`): what the
    /// operator changes when it writes, and what a controller's status update leaves alone.
    pub fn children_versions(&self) -> Vec<String> {
        let kinds = [
            "statefulset",
            "configmap",
            "secret",
            "service",
            "cronjob",
            "deployment",
            "poddisruptionbudget",
            "serviceaccount",
            "role",
            "rolebinding",
        ];
        self.child_records(&kinds, |o| {
            let writes: Vec<String> = o["metadata"]["managedFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["subresource"].is_null())
                .map(|f| format!("{} {} {}", f["manager"], f["operation"], f["time"]))
                .collect();
            writes.join("; ")
        })
    }

    pub fn without_operator(&mut self, figures: &mut Vec<String>) {
        let names = self.instance_names();
        let members: Vec<&str> = names.iter().map(String::as_str).collect();
        let pgc = self.kube.get("postgrescluster", CLUSTER).expect("cluster");
        let ttl = pgc["spec"]["patroni"]["ttl"].as_u64().unwrap_or(30);
        let loop_wait = pgc["spec"]["patroni"]["loopWait"].as_u64().unwrap_or(10);
        self.operator.stop();

        // Failover: the leader's container killed while a client writes.
        let leader = self.current_leader();
        let primary = self.su("dp-primary.dataplane.svc");
        let writer = Writer::start(primary.clone(), "unattended_writes");
        wait_for("the writer running", 60, || {
            (writer.acked() > 50).then_some(())
        });
        let killed = Instant::now();
        self.kubelet.crash_container(&leader, "postgres");
        let others: Vec<&str> = members.iter().copied().filter(|m| *m != leader).collect();
        let new_leader = wait_for(
            "a replica promoted without the operator",
            ttl + loop_wait + 30,
            || self.leader(&others),
        );
        let failover = killed.elapsed();
        // The client's view: writes through `C-primary` resume once the Service follows.
        let at_promotion = writer.acked();
        wait_for("writes resumed through C-primary", 120, || {
            (writer.acked() > at_promotion).then_some(())
        });
        let (acked, lost, gap) = writer.finish(&primary);
        assert_eq!(
            lost, 0,
            "acknowledged rows lost in a failover without the operator"
        );
        assert!(
            failover <= Duration::from_secs(ttl + loop_wait),
            "failover without the operator took {failover:?}"
        );
        self.kubelet.start_container(&leader, "postgres");

        // A deleted replica pod: recreated by the StatefulSet controller, streaming again.
        let victim = others
            .iter()
            .copied()
            .find(|m| *m != new_leader)
            .expect("a replica");
        let uid = self.pod_uids(&[victim]);
        let t = Instant::now();
        self.kube.run(&["delete", "pod", victim, "--wait=false"]);
        wait_for(&format!("{victim} recreated and streaming"), 240, || {
            let now = self.pod_uids(&[victim]);
            let replaced = now.get(victim).is_some_and(|u| Some(u) != uid.get(victim));
            let streaming = self
                .patroni_state(victim)
                .is_some_and(|s| s["role"] == "replica" && s["replication_state"] == "streaming");
            (replaced && streaming).then_some(())
        });
        let recreated = t.elapsed();

        // A backup from the CronJob, and the pooler serving.
        let backup = self.backup("dp-backup-repo1-incr", "unattended-incr");
        let pooled = self.pooled("dp-pooler.dataplane.svc");
        wait_for("a query through the pooler", 60, || {
            pooled.try_query("SELECT 1").ok()
        });

        // Back: the operator writes nothing but the status, which catches up. Settled
        // first: every member running and its pod ready.
        wait_for("every member running and ready", 180, || {
            members
                .iter()
                .all(|m| {
                    let ready = self.kube.get("pod", m).is_some_and(|p| {
                        p["status"]["conditions"].as_array().is_some_and(|c| {
                            c.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    });
                    ready
                        && self
                            .patroni_state(m)
                            .is_some_and(|s| s["state"] == "running")
                })
                .then_some(())
        });
        let children = self.children_versions();
        let uids = self.pod_uids(&members);
        let t = Instant::now();
        self.operator
            .start_again()
            .unwrap_or_else(|e| panic!("restarting the operator: {e}"));
        wait_for("status.primary caught up", 120, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            (pgc["status"]["primary"] == new_leader.as_str()).then_some(())
        });
        let caught_up = t.elapsed();
        self.wait_for_resyncs(3);
        assert_eq!(
            self.children_versions(),
            children,
            "the operator wrote a child"
        );
        assert_eq!(self.pod_uids(&members), uids, "the operator replaced a pod");
        figures.push(format!(
            "operator stopped: kill -9 of the leader → {new_leader} promoted in {:.1} s, 0 of {acked} acknowledged rows lost (longest write gap {:.1} s); a deleted replica pod recreated and streaming in {:.1} s; an incremental backup in {:.1} s; the pooler serving. Operator started again: status caught up in {:.1} s, no child written, no pod replaced",
            failover.as_secs_f64(),
            gap.as_secs_f64(),
            recreated.as_secs_f64(),
            backup.as_secs_f64(),
            caught_up.as_secs_f64()
        ));
    }

    /// The operator SIGKILLed while a switchover it was asked for is under way (its
    /// `InProgress` record written, Patroni asked or about to be): the next operator process
    /// finishes the request by looking at the members, with one timeline change at most —
    /// never a second switchover — and no acknowledged row lost.
    pub fn switchover_interrupted(&mut self, figures: &mut Vec<String>) {
        let primary = self.su("dp-primary.dataplane.svc");
        let writer = Writer::start(primary.clone(), "interrupted_switchover_writes");
        wait_for("the writer running", 60, || {
            (writer.acked() > 50).then_some(())
        });
        let timeline = |h: &Harness| {
            let leader = h.current_leader();
            let state = h.patroni_state(&leader).expect("the leader answers");
            (leader, state["timeline"].as_u64().expect("a timeline"))
        };
        // Tries until the kill lands inside the window (the status polled as fast as
        // kubectl answers, the switchover takes a second or more); each try is a real,
        // complete request, and the next starts from where it left the cluster.
        let mut attempt = 0;
        let (value, base, switched_when_killed) = loop {
            attempt += 1;
            assert!(attempt <= 3, "never caught a switchover in progress");
            let (leader, base) = timeline(self);
            let value = format!("any@interrupted{attempt}");
            self.annotate(&format!("pgpilot.io/switchover={value}"))
                .unwrap_or_else(|e| panic!("{value}: {e}"));
            let seen = wait_for(&format!("{value} in status.lastSwitchover"), 120, || {
                let pgc = self.kube.get("postgrescluster", CLUSTER)?;
                let last = &pgc["status"]["lastSwitchover"];
                (last["target"] == value.as_str()).then(|| last["outcome"].clone())
            });
            if seen == "InProgress" {
                self.operator.kill();
                let names = self.instance_names();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let now = self.leader(&names);
                break (value, base, now.is_some_and(|l| l != leader));
            }
            wait_for("the switchover's new leader settled", 60, || {
                let pgc = self.kube.get("postgrescluster", CLUSTER)?;
                (pgc["status"]["primary"] == pgc["status"]["lastSwitchover"]["to"]).then_some(())
            });
        };
        let killed = Instant::now();
        self.operator
            .start_again()
            .unwrap_or_else(|e| panic!("restarting the operator: {e}"));
        let last = wait_for(&format!("{value} finished"), 180, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            let last = pgc["status"]["lastSwitchover"].clone();
            (last["target"] == value.as_str() && last["outcome"] != "InProgress").then_some(last)
        });
        let finished = killed.elapsed();
        self.wait_for_resyncs(3);
        let (now_leader, after) = timeline(self);
        let (acked, lost, gap) = writer.finish(&primary);
        assert_eq!(lost, 0, "acknowledged rows lost");
        match last["outcome"].as_str() {
            Some("Succeeded") => {
                assert_eq!(last["to"], now_leader.as_str(), "{last}");
                assert_eq!(after, base + 1, "exactly one switchover: {last}");
            }
            Some("Failed") => {
                assert_eq!(after, base, "no switchover, and none later: {last}");
            }
            other => panic!("outcome {other:?}: {last}"),
        }
        figures.push(format!(
            "operator SIGKILLed with a requested switchover InProgress (attempt {attempt}; the primary had {}changed): the restarted operator recorded {} ({}) {:.1} s after the kill; timeline {base} → {after}, no second switchover over 3 rounds of resyncs; {acked} rows acknowledged, 0 lost, longest write gap {:.1} s",
            if switched_when_killed { "" } else { "not yet " },
            last["outcome"].as_str().unwrap_or_default(),
            last["message"].as_str().unwrap_or_default(),
            finished.as_secs_f64(),
            gap.as_secs_f64()
        ));
    }
}
