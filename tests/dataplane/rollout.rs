//! Day 2, rollouts, on the real data plane: a pod-template change replaces every instance
//! pod, replicas first, then exactly one switchover, then the old primary, with no
//! acknowledged row lost; an operator killed half-way is replaced by one that finishes the
//! rollout; an operator restart with nothing changed replaces nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::json;

use super::day2::Writer;
use super::kube::wait_for;
use super::{CLUSTER, Harness};

const MEMBERS: [&str; 3] = ["dp-0", "dp-1", "dp-2"];

impl Harness {
    /// Pod name → (UID, creation time) of the instance pods.
    fn instance_pods(&self) -> BTreeMap<String, (String, String)> {
        self.pods_meta(&MEMBERS)
    }

    /// Pod name → (UID, creation time) of those of `members` that exist.
    pub fn pods_meta(&self, members: &[&str]) -> BTreeMap<String, (String, String)> {
        members
            .iter()
            .filter_map(|m| {
                let pod = self.kube.get("pod", m)?;
                let meta = &pod["metadata"];
                Some((
                    m.to_string(),
                    (
                        meta["uid"].as_str().unwrap_or_default().to_owned(),
                        meta["creationTimestamp"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                ))
            })
            .collect()
    }

    /// The notes of the cluster's Events with this reason, oldest first.
    fn events(&self, reason: &str) -> Vec<String> {
        let mut events: Vec<(String, String)> = self
            .cluster_events(Some(CLUSTER), Some(reason))
            .iter()
            .map(|e| {
                let at = e["eventTime"]
                    .as_str()
                    .or(e["lastTimestamp"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                (at, e["message"].as_str().unwrap_or_default().to_owned())
            })
            .collect();
        events.sort();
        events.into_iter().map(|(_, m)| m).collect()
    }

    fn rolling(&self) -> Option<(String, String)> {
        let pgc = self.kube.get("postgrescluster", CLUSTER)?;
        let c = pgc["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Rolling")?
            .clone();
        Some((
            c["status"].as_str()?.to_owned(),
            c["message"].as_str().unwrap_or_default().to_owned(),
        ))
    }

    /// A resources change rolls every instance pod, replicas first, one switchover, the
    /// old primary last; the operator is killed (SIGKILL) after the first replacement and
    /// its successor finishes.
    pub fn rollout(&mut self, figures: &mut Vec<String>) {
        let leader = self.current_leader();
        let before = self.instance_pods();
        let switchovers = self.occurrences(Some(CLUSTER), Some("SwitchedOver"));
        let primary = self.su("dp-primary.dataplane.svc");
        let writer = Writer::start(primary.clone(), "rollout_writes");
        wait_for("the writer running", 60, || {
            (writer.acked() > 50).then_some(())
        });
        let t = Instant::now();
        self.edit(json!({ "spec": { "resources": { "requests": { "cpu": "150m" } } } }));
        // One pod replaced, then the operator dies mid-rollout.
        wait_for("the first pod replaced", 120, || {
            let now = self.instance_pods();
            MEMBERS
                .iter()
                .any(|m| now.get(*m).is_some_and(|p| p.0 != before[*m].0))
                .then_some(())
        });
        self.operator.kill();
        let killed_after = t.elapsed();
        self.operator
            .start_again()
            .unwrap_or_else(|e| panic!("restarting the operator: {e}"));
        let after = wait_for("every instance pod replaced", 420, || {
            let now = self.instance_pods();
            (now.len() == MEMBERS.len() && MEMBERS.iter().all(|m| now[*m].0 != before[*m].0))
                .then_some(now)
        });
        wait_for("Rolling=False", 120, || {
            self.rolling().filter(|(s, _)| s == "False")
        });
        let took = t.elapsed();
        let new_leader = self.current_leader();
        let replicas: Vec<&str> = MEMBERS
            .iter()
            .copied()
            .filter(|m| *m != new_leader)
            .collect();
        self.check_topology(&new_leader, &replicas);
        let (acked, lost, gap) = writer.finish(&primary);

        // The old primary's pod was replaced last.
        let mut order: Vec<(&String, &str)> =
            after.iter().map(|(m, (_, at))| (at, m.as_str())).collect();
        order.sort();
        assert_eq!(
            order.last().map(|(_, m)| *m),
            Some(leader.as_str()),
            "the old primary is replaced last: {order:?}"
        );
        assert_ne!(new_leader, leader, "the primary moved before its pod went");
        let switched = self.events("SwitchedOver");
        assert_eq!(
            self.occurrences(Some(CLUSTER), Some("SwitchedOver")) - switchovers,
            1,
            "exactly one switchover: {switched:?}"
        );
        assert_eq!(lost, 0, "acknowledged rows lost during the rollout");
        figures.push(format!(
            "rollout of a resources change (3 pods, operator SIGKILLed {:.0} s in and restarted): {:.1} s, replicas first, 1 switchover ({}), old primary {leader} last; {acked} rows acknowledged, 0 lost, longest write gap {:.1} s",
            killed_after.as_secs_f64(),
            took.as_secs_f64(),
            switched.last().map(String::as_str).unwrap_or_default(),
            gap.as_secs_f64()
        ));

        // Nothing changed: an operator restart and resyncs replace nothing.
        let uids = self.instance_pods();
        self.operator.stop();
        self.operator
            .start_again()
            .unwrap_or_else(|e| panic!("restarting the operator: {e}"));
        self.wait_for_resyncs(4);
        assert_eq!(
            self.instance_pods(),
            uids,
            "an operator restart with no change replaced a pod"
        );
        assert_eq!(self.rolling().map(|r| r.0).as_deref(), Some("False"));
        figures.push(
            "operator restarted with no spec change, then four rounds of resyncs: no pod replaced (UIDs unchanged)".into(),
        );
    }

    pub fn annotate(&self, key_value: &str) -> Result<(String, String), String> {
        self.kube.try_run_full(&[
            "annotate",
            "postgrescluster",
            CLUSTER,
            key_value,
            "--overwrite",
        ])
    }

    /// Asks for a switchover by annotation and waits for the status to record it; returns
    /// (from, to, seconds) as recorded.
    fn switchover(&self, value: &str) -> (String, String, f64) {
        let t = Instant::now();
        self.annotate(&format!("pgpilot.io/switchover={value}"))
            .unwrap_or_else(|e| panic!("pgpilot.io/switchover={value}: {e}"));
        let last = wait_for(&format!("status.lastSwitchover for {value}"), 120, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            let last = pgc["status"]["lastSwitchover"].clone();
            (last["target"] == value && last["outcome"] != "InProgress").then_some(last)
        });
        assert_eq!(last["outcome"], "Succeeded", "switchover {value}: {last}");
        let field = |k: &str| last[k].as_str().unwrap_or_default().to_owned();
        (field("from"), field("to"), t.elapsed().as_secs_f64())
    }

    /// Operations asked for with annotations and `spec.paused`: switchovers to `any` and
    /// to a named member, each once and with no acknowledged row lost; targets refused at
    /// admission; a paused cluster keeps its pods through a template change and a restart
    /// request, and rolls once when resumed.
    pub fn operations(&mut self, figures: &mut Vec<String>) {
        let switched_before = self.occurrences(Some(CLUSTER), Some("SwitchedOver"));
        let primary = self.su("dp-primary.dataplane.svc");
        let writer = Writer::start(primary.clone(), "switchover_writes");
        wait_for("the writer running", 60, || {
            (writer.acked() > 50).then_some(())
        });
        let leader = self.current_leader();
        let (from, to, any_took) = self.switchover("any");
        assert_eq!(from, leader);
        assert_ne!(to, leader);
        wait_for(&format!("{to} leading"), 60, || {
            (self.leader(&MEMBERS) == Some(to.clone())).then_some(())
        });
        // A named target: the synchronous standby, once Patroni's sync key and the status
        // agree on it and on the new primary (admission checks the target against the
        // status, the operator against the sync key).
        let target = wait_for("a synchronous standby named in the status", 120, || {
            let sync = self.kube.get("endpoints", "dp-sync")?;
            let annotations = &sync["metadata"]["annotations"];
            let named = annotations["sync_standby"].as_str()?.to_owned();
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            let agreed = annotations["leader"] == to.as_str()
                && pgc["status"]["primary"] == to.as_str()
                && pgc["status"]["members"].as_array()?.iter().any(|m| {
                    m["name"] == named.as_str()
                        && m["role"] == "sync_standby"
                        && m["state"] == "running"
                });
            agreed.then_some(named)
        });
        let (from2, to2, named_took) = self.switchover(&target);
        assert_eq!(
            (from2.as_str(), to2.as_str()),
            (to.as_str(), target.as_str())
        );
        wait_for(&format!("{target} leading"), 60, || {
            (self.leader(&MEMBERS) == Some(target.clone())).then_some(())
        });
        // Admission checks a target against the status: wait until it names the new
        // primary, or a refusal below would race the status write.
        wait_for(&format!("status.primary {target}"), 60, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            (pgc["status"]["primary"] == target.as_str()).then_some(())
        });
        let (acked, lost, gap) = writer.finish(&primary);
        assert_eq!(lost, 0, "acknowledged rows lost in the switchovers");
        assert_eq!(
            self.occurrences(Some(CLUSTER), Some("SwitchedOver")) - switched_before,
            2,
            "each request switched over once"
        );
        // Re-applying a value already done asks for nothing.
        self.annotate(&format!("pgpilot.io/switchover={target}"))
            .expect("the same value again");
        // Refused at admission, with the field path.
        let again = format!("{target}@again");
        for (value, says) in [
            (again.as_str(), "is the primary already"),
            ("dp-7", "must be \"any\" or a member of this cluster"),
        ] {
            let err = self
                .annotate(&format!("pgpilot.io/switchover={value}"))
                .expect_err("an invalid switchover target is refused");
            assert!(
                err.contains("metadata.annotations[pgpilot.io/switchover]") && err.contains(says),
                "{err}"
            );
        }
        let err = self
            .annotate("pgpilot.io/swtichover=any")
            .expect_err("an unknown pgpilot.io/ key is refused");
        assert!(
            err.contains("metadata.annotations[pgpilot.io/swtichover]: Unsupported value"),
            "{err}"
        );
        figures.push(format!(
            "switchover asked for by annotation: any → {to} {any_took:.1} s, {target} (named) {named_took:.1} s, from annotation to status; {acked} rows acknowledged, 0 lost, longest write gap {:.1} s; an unknown key, the primary and a non-member refused at admission",
            gap.as_secs_f64()
        ));

        // Paused: a template change and a restart request are stored, not carried out.
        let uids = self.instance_pods();
        let warned = self.edit(json!({ "spec": { "paused": true } }));
        assert!(
            warned.contains("spec.paused"),
            "no warning for paused: {warned}"
        );
        self.edit(json!({ "spec": { "resources": { "requests": { "cpu": "200m" } } } }));
        self.annotate("pgpilot.io/restart=2026-11-30T14.00")
            .expect("a restart request");
        wait_for("condition Paused=True", 60, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            pgc["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Paused" && c["status"] == "True")
                .then_some(())
        });
        self.wait_for_resyncs(3);
        assert_eq!(
            self.instance_pods(),
            uids,
            "a paused cluster's pod was replaced"
        );
        let sts = self
            .kube
            .get("statefulset", CLUSTER)
            .expect("the StatefulSet");
        assert_eq!(
            sts["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "150m",
            "a paused cluster's StatefulSet was changed"
        );
        // Resumed: one rollout carries both changes.
        let t = Instant::now();
        self.edit(json!({ "spec": { "paused": false } }));
        wait_for("every instance pod replaced after resuming", 420, || {
            let now = self.instance_pods();
            (now.len() == MEMBERS.len() && MEMBERS.iter().all(|m| now[*m].0 != uids[*m].0))
                .then_some(())
        });
        wait_for("Rolling=False", 120, || {
            self.rolling().filter(|(s, _)| s == "False")
        });
        let sts = self
            .kube
            .get("statefulset", CLUSTER)
            .expect("the StatefulSet");
        assert_eq!(
            sts["spec"]["template"]["metadata"]["annotations"]["pgpilot.io/restart"],
            "2026-11-30T14.00"
        );
        let leader = self.current_leader();
        let replicas: Vec<&str> = MEMBERS.iter().copied().filter(|m| *m != leader).collect();
        self.check_topology(&leader, &replicas);
        figures.push(format!(
            "spec.paused: a resources change and pgpilot.io/restart held over three counted rounds of resyncs with no pod replaced and the StatefulSet untouched; resumed, one rollout of both in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }
}
