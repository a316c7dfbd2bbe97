//! Rolling updates, in the order a careful DBA would follow. The instance StatefulSet uses
//! `updateStrategy: OnDelete`, so Kubernetes replaces no pod by itself: when the rendered
//! pod template changes, the StatefulSet controller records a new revision, and pgpilot
//! replaces the pods that run an older one, one at a time:
//!
//! 1. an outdated replica that is not ready first (it serves nothing);
//! 2. then the outdated replicas, the most lagging first, each replacement ready and
//!    streaming (and, in a synchronous mode, a synchronous standby named) before the next;
//! 3. then a switchover to an up-to-date streaming replica: the named synchronous standby
//!    in a synchronous mode, else the one with the least lag;
//! 4. and only then the old primary, now a replica. A one-instance cluster's pod is
//!    replaced as it is: Patroni checkpoints before it stops PostgreSQL.
//!
//! A pod is outdated only when its `controller-revision-hash` differs from the StatefulSet's
//! update revision: the revision changes only when the rendered template does, so a resync,
//! an operator restart or an operator upgrade that renders the same template replaces
//! nothing. `plan` keeps no state: an operator that takes over in the middle of a rollout
//! reads the same pods and revisions and carries on, with no second switchover (after the
//! first, the primary runs the new revision).

use std::time::Instant;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, DynamicObject, EvictParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::converge::{self, NotApplied};
use super::{Context, Scope, publish};
use crate::patroni::member::{self as pmember, Member};
use crate::patroni::{MemberState, SwitchoverRequest};

/// The label the StatefulSet controller puts on each pod: the revision it was made from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Condition reasons while a rollout runs.
pub const REPLACING: &str = "Replacing";
pub const SWITCHING_OVER: &str = "SwitchingOver";
pub const WAITING: &str = "Waiting";

/// One step of the rollout of cluster `name`: `Ok(())` when every pod runs the current
/// template, else what is under way, as `(reason, message)` for the `Rolling` condition.
pub async fn step(
    scope: &Scope<'_>,
    sts: Option<&StatefulSet>,
    pods: &[Pod],
    members: &[Member],
    sync: Option<&[String]>,
) -> Result<(), NotApplied> {
    let Scope {
        ctx,
        obj,
        namespace,
        name,
        ..
    } = *scope;
    let key = format!("{namespace}/{name}");
    let Some(sts) = sts else { return Ok(()) };
    let status = sts.status.as_ref();
    if status.and_then(|s| s.observed_generation) < sts.metadata.generation {
        return Err((
            WAITING.into(),
            "the StatefulSet controller has not seen the new template yet".into(),
        ));
    }
    let Some(revision) = status.and_then(|s| s.update_revision.as_deref()) else {
        return Ok(());
    };
    let current = |p: &Pod| p.labels().get(REVISION_LABEL).map(String::as_str) == Some(revision);
    if pods.iter().all(current) {
        report_back(ctx, obj, &key).await;
        return Ok(());
    }
    let instances = observe(scope.patroni, pods, members, current).await;
    let expected = sts
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .and_then(|r| usize::try_from(r).ok())
        .unwrap_or(pods.len());
    let next = plan(&instances, expected, sync);
    // A replaced pod is back once the plan moves past it.
    if !matches!(&next, Step::Wait(_)) {
        report_back(ctx, obj, &key).await;
    }
    match next {
        Step::Done => Ok(()),
        Step::Wait(why) => Err((WAITING.into(), why)),
        Step::Replace { pod, why } => {
            let uid = pods
                .iter()
                .find(|p| p.name_any() == pod)
                .and_then(|p| p.uid());
            evict(ctx, namespace, &pod, uid).await?;
            info!(cluster = %key, %pod, "replacing ({why}) to run revision {revision}");
            publish(
                ctx,
                obj,
                EventType::Normal,
                "Replacing",
                format!("evicted {pod} ({why}) to run the current template"),
            )
            .await;
            ctx.replacing(&key, &pod);
            Err((REPLACING.into(), format!("replacing {pod}: {why}")))
        }
        Step::Switchover { from, to } => {
            let outcome = switchover(scope, members, &from, &to, "rollout").await;
            match outcome {
                Ok(took) => Err((
                    SWITCHING_OVER.into(),
                    format!(
                        "switched over from {from} to {to} in {took:.1} s; {from} is replaced next"
                    ),
                )),
                Err(e) => Err((SWITCHING_OVER.into(), e)),
            }
        }
    }
}

/// Each pod with its member's live state (`GET /patroni`: a pod's annotation may be a loop
/// behind).
pub(super) async fn observe(
    patroni: &crate::patroni::Client,
    pods: &[Pod],
    members: &[Member],
    current: impl Fn(&Pod) -> bool,
) -> Vec<Instance> {
    let leader = pmember::leader(members);
    let mut instances = Vec::new();
    for p in pods {
        let pod_name = p.name_any();
        let member = members.iter().find(|m| m.name == pod_name);
        let state = match member.and_then(|m| m.api.as_ref()) {
            Some(at) => patroni.member(at).await.ok(),
            None => None,
        };
        instances.push(Instance {
            current: current(p),
            ready: is_ready(p),
            terminating: p.meta().deletion_timestamp.is_some(),
            https: super::members::serves_https(p),
            state,
            lag: match (member, leader) {
                (Some(m), Some(l)) if l.name != m.name => pmember::lag_bytes(m, l),
                _ => None,
            },
            name: pod_name,
        });
    }
    instances
}

/// The Event for the pod replaced last, once it is back: ready, streaming, and past.
async fn report_back(ctx: &Context, obj: &DynamicObject, key: &str) {
    if let Some((pod, since)) = ctx.replaced(key) {
        let note = format!(
            "{pod} runs the current template, ready and streaming, {:.1} s after its eviction",
            since.elapsed().as_secs_f64()
        );
        publish(ctx, obj, EventType::Normal, "Replaced", note).await;
    }
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Deletes a pod through the Eviction API, so that the PodDisruptionBudget counts the
/// rollout like any other voluntary disruption (a node drain at the same moment cannot
/// take a second member down); only the pod that was planned (its UID) is deleted.
async fn evict(
    ctx: &Context,
    namespace: &str,
    pod: &str,
    uid: Option<String>,
) -> Result<(), NotApplied> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let params = EvictParams {
        delete_options: Some(DeleteParams {
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    match api.evict(pod, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 429 => Err((
            WAITING.into(),
            format!(
                "the PodDisruptionBudget does not allow evicting {pod} now: {}",
                s.message
            ),
        )),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Err((
            WAITING.into(),
            format!("{pod} changed meanwhile: {}", s.message),
        )),
        Err(e) => Err((REPLACING.into(), format!("evicting {pod}: {e}"))),
    }
}

/// `POST /switchover` on the primary, timed; returns the seconds it took or what failed.
/// Every outcome is an Event.
pub async fn switchover(
    scope: &Scope<'_>,
    members: &[Member],
    from: &str,
    to: &str,
    why: &str,
) -> Result<f64, String> {
    let Scope {
        ctx,
        obj,
        namespace,
        name,
        ..
    } = *scope;
    let Some(at) = members
        .iter()
        .find(|m| m.name == from)
        .and_then(|m| m.api.clone())
    else {
        return Err(format!("{from} has no address"));
    };
    let client = converge::writer(scope).await.map_err(|(_, m)| m)?;
    let request = SwitchoverRequest {
        leader: from.to_owned(),
        candidate: Some(to.to_owned()),
    };
    let started = Instant::now();
    let result = client.switchover(&at, &request).await;
    let took = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => {
            info!(cluster = %format!("{namespace}/{name}"), %from, %to, "switched over ({why}) in {took:.1} s");
            publish(
                ctx,
                obj,
                EventType::Normal,
                "SwitchedOver",
                format!("switched over from {from} to {to} in {took:.1} s ({why})"),
            )
            .await;
            Ok(took)
        }
        Err(e) => {
            let message = format!("switchover from {from} to {to} ({why}): {e}");
            publish(
                ctx,
                obj,
                EventType::Warning,
                "SwitchoverFailed",
                message.clone(),
            )
            .await;
            Err(message)
        }
    }
}

/// One instance pod as the rollout sees it.
#[derive(Debug, Clone, Default)]
pub struct Instance {
    pub name: String,
    /// Runs the StatefulSet's update revision.
    pub current: bool,
    /// The pod's `Ready` condition.
    pub ready: bool,
    /// Deleted, still stopping.
    pub terminating: bool,
    /// What Patroni answers on `GET /patroni`; `None` when it does not answer.
    pub state: Option<MemberState>,
    /// Bytes behind the primary, when known.
    pub lag: Option<u64>,
    /// Its Patroni serves HTTPS (the cluster has TLS and the pod runs a template that
    /// says so).
    pub https: bool,
}

impl Instance {
    pub(super) fn is_primary(&self) -> bool {
        self.state.as_ref().is_some_and(MemberState::is_primary)
    }

    pub(super) fn is_streaming_replica(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|s| s.is_running() && !s.is_primary() && s.is_streaming())
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the update revision.
    Done,
    /// Something must settle first.
    Wait(String),
    /// Delete this pod; its StatefulSet recreates it from the new template.
    Replace { pod: String, why: String },
    /// Hand the primary over before its pod is replaced.
    Switchover { from: String, to: String },
}

/// The next step of the rollout of `pods` (`expected` of them); `sync` holds the standbys
/// Patroni names synchronous, `None` in the asynchronous mode.
pub fn plan(pods: &[Instance], expected: usize, sync: Option<&[String]>) -> Step {
    if pods.iter().all(|p| p.current) {
        return Step::Done;
    }
    if let Some(p) = pods.iter().find(|p| p.terminating) {
        return Step::Wait(format!("{} is being replaced", p.name));
    }
    if pods.len() < expected {
        return Step::Wait(format!(
            "{} of {expected} pods exist; waiting for the StatefulSet to create the rest",
            pods.len()
        ));
    }
    // A replacement that does not come up stops the rollout: the new template may be bad.
    if let Some(p) = pods.iter().find(|p| p.current && !p.ready) {
        return Step::Wait(format!("{} is not ready yet", p.name));
    }
    if let Some(p) = pods
        .iter()
        .find(|p| !p.current && !p.ready && !p.is_primary())
    {
        return Step::Replace {
            pod: p.name.clone(),
            why: "not ready, so it serves nothing".into(),
        };
    }
    if let Some(p) = pods.iter().find(|p| !p.ready) {
        return Step::Wait(format!("{} is not ready yet", p.name));
    }
    let primaries: Vec<&Instance> = pods.iter().filter(|p| p.is_primary()).collect();
    let [primary] = primaries[..] else {
        return Step::Wait(format!(
            "{} running primaries; waiting for Patroni to settle on one",
            primaries.len()
        ));
    };
    if let Some(p) = pods
        .iter()
        .find(|p| p.name != primary.name && !p.is_streaming_replica())
    {
        return Step::Wait(format!("{} is not streaming yet", p.name));
    }
    let replicas = pods
        .iter()
        .filter(|p| p.name != primary.name)
        .map(|p| p.name.as_str());
    if let Some(why) = pmember::unnamed_sync_standby(sync, replicas) {
        return Step::Wait(why);
    }
    let named = |p: &Instance| sync.is_none_or(|names| names.contains(&p.name));
    let mut outdated: Vec<&Instance> = pods
        .iter()
        .filter(|p| !p.current && p.name != primary.name)
        .collect();
    // The most lagging first: it has the least to lose, and the others keep serving reads.
    outdated.sort_by_key(|p| std::cmp::Reverse(p.lag.unwrap_or(0)));
    if let Some(p) = outdated.first() {
        return Step::Replace {
            pod: p.name.clone(),
            why: match p.lag {
                Some(lag) if lag > 0 => format!("a replica ({lag} bytes behind)"),
                _ => "a replica".into(),
            },
        };
    }
    // Only the primary is outdated.
    if pods.len() == 1 {
        return Step::Replace {
            pod: primary.name.clone(),
            why: "the only instance".into(),
        };
    }
    let candidate = pods
        .iter()
        .filter(|p| p.current && p.is_streaming_replica() && named(p))
        .min_by_key(|p| (p.lag.unwrap_or(u64::MAX), p.name.clone()));
    match candidate {
        // A template that turns TLS on or off for Patroni's API: the old primary cannot
        // check a candidate that serves the other scheme (it calls it to decide), so a
        // switchover would be refused. Stopping the primary hands over instead: Patroni
        // shuts PostgreSQL down cleanly, releases the leader key with its last position,
        // and the up-to-date replica takes over.
        Some(to) if to.https != primary.https => Step::Replace {
            pod: primary.name.clone(),
            why: "the primary, which hands over as it stops: Patroni's API changes between HTTP and HTTPS, across which members cannot check each other for a switchover".into(),
        },
        Some(to) => Step::Switchover {
            from: primary.name.clone(),
            to: to.name.clone(),
        },
        None => Step::Wait("no up-to-date streaming replica to switch over to".into()),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A running member as Patroni reports it; replicas stream with no lag.
    pub(in crate::controller) fn pod(name: &str, role: &str, current: bool) -> Instance {
        Instance {
            name: name.into(),
            current,
            ready: true,
            terminating: false,
            state: Some(MemberState {
                state: "running".into(),
                role: role.into(),
                replication_state: (role == "replica").then(|| "streaming".into()),
                ..Default::default()
            }),
            lag: (role == "replica").then_some(0),
            https: false,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn nothing_outdated_is_done() {
        let pods = [pod("a", "primary", true), pod("b", "replica", true)];
        assert_eq!(plan(&pods, 2, None), Step::Done);
        // Even with a pod missing or unready: that is the StatefulSet's business.
        assert_eq!(plan(&pods[..1], 2, None), Step::Done);
    }

    #[test]
    fn replicas_most_lagging_first_then_a_switchover_then_the_old_primary() {
        let mut pods = vec![
            pod("a", "primary", false),
            pod("b", "replica", false),
            pod("c", "replica", false),
        ];
        pods[2].lag = Some(4096);
        let sync = names(&["b"]);
        let replace = |step| match step {
            Step::Replace { pod, .. } => pod,
            other => panic!("expected a replacement, got {other:?}"),
        };
        assert_eq!(replace(plan(&pods, 3, Some(&sync))), "c");
        pods[2] = pod("c", "replica", true);
        assert_eq!(replace(plan(&pods, 3, Some(&sync))), "b");
        pods[1] = pod("b", "replica", true);
        // In a synchronous mode, only the named standby may take over.
        assert_eq!(
            plan(&pods, 3, Some(&names(&["c"]))),
            Step::Switchover {
                from: "a".into(),
                to: "c".into()
            }
        );
        // Asynchronous: the least lagging.
        pods[1].lag = Some(10);
        assert_eq!(
            plan(&pods, 3, None),
            Step::Switchover {
                from: "a".into(),
                to: "c".into()
            }
        );
        // After the switchover the old primary is an outdated replica.
        pods[0] = pod("a", "replica", false);
        pods[2] = pod("c", "primary", true);
        assert_eq!(replace(plan(&pods, 3, Some(&names(&["b"])))), "a");
    }

    #[test]
    fn a_change_of_the_api_scheme_stops_the_primary_instead_of_a_switchover() {
        // The replica already runs the template with HTTPS; the primary still serves HTTP
        // and would refuse a candidate it cannot check.
        let mut pods = vec![pod("a", "primary", false), pod("b", "replica", true)];
        pods[1].https = true;
        match plan(&pods, 2, None) {
            Step::Replace { pod, why } => {
                assert_eq!(pod, "a");
                assert!(why.contains("HTTPS"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // The same scheme on both sides: a switchover, as always.
        pods[0].https = true;
        assert!(matches!(plan(&pods, 2, None), Step::Switchover { .. }));
    }

    #[test]
    fn waits_for_each_replacement_to_stream_and_be_named() {
        let mut pods = vec![
            pod("a", "primary", false),
            pod("b", "replica", true),
            pod("c", "replica", false),
        ];
        pods[1].terminating = true;
        assert_eq!(
            plan(&pods, 3, None),
            Step::Wait("b is being replaced".into())
        );
        assert!(matches!(plan(&pods[..2], 3, None), Step::Wait(_)));
        pods[1] = pod("b", "replica", true);
        pods[1].ready = false;
        assert_eq!(
            plan(&pods, 3, None),
            Step::Wait("b is not ready yet".into())
        );
        pods[1] = pod("b", "replica", true);
        pods[1].state.as_mut().unwrap().replication_state = None;
        assert_eq!(
            plan(&pods, 3, None),
            Step::Wait("b is not streaming yet".into())
        );
        pods[1] = pod("b", "replica", true);
        assert_eq!(
            plan(&pods, 3, Some(&[])),
            Step::Wait("Patroni names no synchronous standby yet".into())
        );
    }

    #[test]
    fn no_switchover_without_an_up_to_date_candidate() {
        let pods = [pod("a", "primary", false), pod("b", "replica", true)];
        // In a synchronous mode, an up-to-date replica that is not the named one is not a
        // candidate.
        let step = plan(&pods, 2, Some(&names(&["a", "x"])));
        assert!(matches!(step, Step::Wait(_)), "{step:?}");
        let mut lagging = pods.clone();
        lagging[1].state.as_mut().unwrap().replication_state = Some("in archive recovery".into());
        assert!(matches!(plan(&lagging, 2, None), Step::Wait(_)));
    }

    #[test]
    fn a_broken_outdated_replica_goes_first_and_a_lone_primary_is_replaced() {
        let mut pods = vec![pod("a", "primary", false), pod("b", "replica", false)];
        pods[1].ready = false;
        pods[1].state = None;
        assert_eq!(
            plan(&pods, 2, Some(&[])),
            Step::Replace {
                pod: "b".into(),
                why: "not ready, so it serves nothing".into()
            }
        );
        let alone = [pod("a", "primary", false)];
        assert!(matches!(plan(&alone, 1, Some(&[])), Step::Replace { pod, .. } if pod == "a"));
        // No primary (a failover under way): wait.
        let mut leaderless = vec![pod("a", "replica", false), pod("b", "replica", true)];
        leaderless[0].state.as_mut().unwrap().replication_state = None;
        assert!(matches!(plan(&leaderless, 2, None), Step::Wait(_)));
    }
}
