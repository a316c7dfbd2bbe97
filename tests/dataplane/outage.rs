//! The Kubernetes API as Patroni's DCS is a single point of failure unless Patroni's
//! failsafe mode is on: kube-apiserver frozen (SIGSTOP) for longer than `ttl` while a client
//! writes through the primary Service, once with `failsafeMode: false` and once with
//! `true`. What the client saw and what the leader did are measured, not assumed; the
//! operator, cut off meanwhile, resumes its watches and writes nothing for it.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Harness;
use super::day2::Writer;
use super::kube::wait_for;

/// With failsafe mode off: longer than `ttl` (30 s) plus a Patroni loop, enough to see
/// every primary demote.
const SHORT_OUTAGE: Duration = Duration::from_secs(45);
/// With failsafe mode on (the default): two minutes, as a control-plane upgrade or an etcd
/// restore may take.
const LONG_OUTAGE: Duration = Duration::from_secs(120);

impl Harness {
    /// One outage; returns (leader before, its role at the end of the outage, rows
    /// acknowledged, rows lost, longest write gap).
    fn outage(&mut self, failsafe: bool, outage: Duration) -> (String, String, u64, u64, Duration) {
        self.edit(json!({ "spec": { "patroni": { "failsafeMode": failsafe } } }));
        self.wait_applied(&format!("failsafeMode {failsafe}"), 120);
        let leader = self.current_leader();
        let primary = self.su("dp-primary.dataplane.svc");
        let writer = Writer::start(primary.clone(), &format!("outage_writes_{failsafe}"));
        wait_for("the writer running", 60, || {
            (writer.acked() > 50).then_some(())
        });
        let children = self.children_versions();
        self.cluster.pause_api_server();
        let t = Instant::now();
        std::thread::sleep(outage.saturating_sub(Duration::from_secs(3)));
        let role = self
            .patroni_state(&leader)
            .and_then(|s| s["role"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "not answering".into());
        std::thread::sleep(outage.saturating_sub(t.elapsed()));
        self.cluster.resume_api_server();
        // Settled again: one leader, every other member streaming from it, the Services
        // and the status following.
        let members: Vec<String> = self.instance_names();
        let names: Vec<&str> = members.iter().map(String::as_str).collect();
        let new_leader = wait_for("a leader after the outage", 180, || self.leader(&names));
        let replicas: Vec<&str> = names.iter().copied().filter(|m| *m != new_leader).collect();
        self.check_topology(&new_leader, &replicas);
        // The operator's watches resumed by themselves (the same process counts resyncs),
        // and nothing was rewritten for having been cut off.
        self.operator
            .check_alive()
            .unwrap_or_else(|e| panic!("the operator after the outage: {e}"));
        self.wait_for_resyncs(2);
        assert_eq!(
            self.children_versions(),
            children,
            "the operator wrote children after the outage"
        );
        let (acked, lost, gap) = writer.finish(&primary);
        (leader, role, acked, lost, gap)
    }

    /// The instance pods that exist now.
    pub fn instance_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .kube
            .list(
                "pods",
                "app.kubernetes.io/component=database,pgpilot.io/cluster=dp",
            )
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    pub fn api_server_outage(&mut self, figures: &mut Vec<String>) {
        for (failsafe, outage) in [(false, SHORT_OUTAGE), (true, LONG_OUTAGE)] {
            let (leader, role, acked, lost, gap) = self.outage(failsafe, outage);
            assert_eq!(lost, 0, "acknowledged rows lost in an API server outage");
            if failsafe {
                assert_eq!(
                    role, "primary",
                    "with failsafe mode the leader stays primary through the outage"
                );
            }
            figures.push(format!(
                "kube-apiserver frozen {} s with failsafeMode {failsafe}: the leader {leader} was {role} at the end of the outage; longest write gap through C-primary {:.1} s, {acked} rows acknowledged, 0 lost; the operator resumed its watches without a restart and wrote no child",
                outage.as_secs(),
                gap.as_secs_f64()
            ));
        }
    }
}
