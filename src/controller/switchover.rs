//! Switchovers asked for with the `pgpilot.io/switchover` annotation, carried out once per
//! value. The intent is written to `status.lastSwitchover` (outcome `InProgress`, with the
//! primary and the candidate) *before* Patroni is asked, so an operator that stops in the
//! middle leaves a record its successor finishes by looking, never by asking again: the
//! primary changed → `Succeeded`; still the old one once Patroni has had time to act →
//! `Failed`, with how to ask again. A second switchover for one request cannot happen.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;

use super::converge::NotApplied;
use super::rollout::{Instance, SWITCHING_OVER, observe, switchover};
use super::{Scope, cluster_resource, publish};
use crate::api::{LastSwitchover, PostgresCluster};
use crate::names;
use crate::patroni::MemberState;
use crate::patroni::member::Member;

pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
/// Recorded before Patroni is asked; replaced by the outcome.
pub const IN_PROGRESS: &str = "InProgress";

/// The switchover asked for with `pgpilot.io/switchover`, when its value is not done yet:
/// the value, and the record of an attempt at it that an operator began and did not finish.
pub fn requested(cluster: &PostgresCluster) -> Option<(String, Option<LastSwitchover>)> {
    let value = cluster
        .annotations()
        .get(names::SWITCHOVER_ANNOTATION)?
        .trim()
        .to_owned();
    let last = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_switchover.as_ref())
        .filter(|l| l.target == value);
    match last {
        _ if value.is_empty() => None,
        Some(l) if l.outcome == IN_PROGRESS => Some((value, Some(l.clone()))),
        Some(_) => None,
        None => Some((value, None)),
    }
}

/// The member a switchover asked for goes to: `target` is `any` (the named synchronous
/// standby in a synchronous mode, else the streaming replica with the least lag) or a
/// member's name. `Err(Ok(why))` to wait, `Err(Err(why))` when the request cannot be met.
pub fn choose(
    pods: &[Instance],
    sync: Option<&[String]>,
    target: &str,
) -> Result<(String, String), Result<String, String>> {
    let primary = match running_primary(pods) {
        Ok(p) => p,
        Err(wait) => return Err(Ok(wait)),
    };
    let named = |p: &Instance| sync.is_none_or(|names| names.contains(&p.name));
    let pick = if target == names::SWITCHOVER_ANY {
        pods.iter()
            .filter(|p| p.is_streaming_replica() && named(p))
            .min_by_key(|p| (p.lag.unwrap_or(u64::MAX), p.name.clone()))
    } else if target == primary {
        return Err(Err(format!("{target} is the primary already")));
    } else {
        let Some(p) = pods.iter().find(|p| p.name == target) else {
            return Err(Err(format!("{target} is not a member of this cluster")));
        };
        if !p.is_streaming_replica() {
            return Err(Ok(format!("{target} is not a streaming replica yet")));
        }
        if !named(p) {
            return Err(Err(format!(
                "{target} is not the synchronous standby ({}); in a synchronous mode Patroni hands over only to it",
                sync.unwrap_or_default().join(", ")
            )));
        }
        Some(p)
    };
    match pick {
        Some(p) => Ok((primary.to_owned(), p.name.clone())),
        None => Err(Ok(match sync {
            Some(_) => "no streaming synchronous standby to switch over to yet".into(),
            None => "no streaming replica to switch over to yet".into(),
        })),
    }
}

/// The one running primary, or why there is not exactly one.
fn running_primary(pods: &[Instance]) -> Result<&str, String> {
    let primaries: Vec<&Instance> = pods
        .iter()
        .filter(|p| p.is_primary() && p.state.as_ref().is_some_and(MemberState::is_running))
        .collect();
    match primaries[..] {
        [primary] => Ok(&primary.name),
        _ => Err(format!(
            "{} running primaries; waiting for Patroni to settle on one",
            primaries.len()
        )),
    }
}

fn entry(
    value: &str,
    from: Option<String>,
    to: Option<String>,
    outcome: &str,
    message: String,
) -> LastSwitchover {
    LastSwitchover {
        target: value.to_owned(),
        from,
        to,
        time: Some(Timestamp::now().to_string()),
        outcome: outcome.into(),
        message: Some(message),
    }
}

/// Carries out the switchover asked for with `value`, or finishes an attempt `pending`
/// that another operator process began. `Err` with the `Rolling` condition while it must
/// wait; `Ok` with what the status records once it is done or refused. `grace` is how long
/// Patroni may take to act on a request (`ttl + loopWait`).
pub async fn carry_out(
    scope: &Scope<'_>,
    pods: &[Pod],
    members: &[Member],
    sync: Option<&[String]>,
    value: &str,
    pending: Option<&LastSwitchover>,
    grace: Duration,
) -> Result<LastSwitchover, NotApplied> {
    let Scope { ctx, obj, .. } = *scope;
    let instances = observe(scope.patroni, pods, members, |_| true).await;
    if let Some(pending) = pending {
        let outcome = finish(&instances, value, pending, grace)?;
        let (type_, reason) = match outcome.outcome.as_str() {
            SUCCEEDED => (EventType::Normal, "SwitchedOver"),
            _ => (EventType::Warning, "SwitchoverFailed"),
        };
        let note = outcome.message.clone().unwrap_or_default();
        publish(ctx, obj, type_, reason, note).await;
        return Ok(outcome);
    }
    match choose(&instances, sync, names::switchover_target(value)) {
        Err(Ok(wait)) => Err((SWITCHING_OVER.into(), format!("{value}: {wait}"))),
        Err(Err(refused)) => {
            publish(
                ctx,
                obj,
                EventType::Warning,
                "SwitchoverFailed",
                format!("{value}: {refused}"),
            )
            .await;
            Ok(entry(value, None, None, FAILED, refused))
        }
        Ok((from, to)) => {
            let intent = entry(
                value,
                Some(from.clone()),
                Some(to.clone()),
                IN_PROGRESS,
                format!("switching over from {from} to {to}"),
            );
            // No record, no request: a successor must be able to tell that one was made.
            record(scope, &intent).await.map_err(|e| {
                (
                    SWITCHING_OVER.into(),
                    format!("{value}: recording the switchover before asking Patroni: {e}"),
                )
            })?;
            Ok(
                match switchover(scope, members, &from, &to, "asked for").await {
                    Ok(took) => entry(
                        value,
                        Some(from.clone()),
                        Some(to.clone()),
                        SUCCEEDED,
                        format!("switched over from {from} to {to} in {took:.1} s"),
                    ),
                    Err(e) => entry(value, Some(from), Some(to), FAILED, e),
                },
            )
        }
    }
}

/// The outcome of an attempt recorded as `pending`, from what the members show now.
fn finish(
    instances: &[Instance],
    value: &str,
    pending: &LastSwitchover,
    grace: Duration,
) -> Result<LastSwitchover, NotApplied> {
    let from = pending.from.clone().unwrap_or_default();
    let to = pending.to.clone().unwrap_or_default();
    let primary = running_primary(instances)
        .map_err(|wait| (SWITCHING_OVER.into(), format!("{value}: {wait}")))?;
    if primary != from {
        return Ok(entry(
            value,
            Some(from.clone()),
            Some(primary.to_owned()),
            SUCCEEDED,
            format!(
                "switched over from {from} to {primary} (the operator that asked for it stopped before it could record the outcome)"
            ),
        ));
    }
    let asked = pending
        .time
        .as_deref()
        .and_then(|t| t.parse::<Timestamp>().ok());
    let waited = asked.map(|t| Timestamp::now().duration_since(t));
    let grace_over = waited.is_none_or(|w| w.as_secs() >= grace.as_secs() as i64);
    if !grace_over {
        return Err((
            SWITCHING_OVER.into(),
            format!(
                "{value}: a switchover from {from} to {to} was asked for; waiting for Patroni to carry it out"
            ),
        ));
    }
    Ok(entry(
        value,
        Some(from.clone()),
        Some(to.clone()),
        FAILED,
        format!(
            "{from} is still the primary {} s after a switchover to {to} was asked for by an operator that stopped meanwhile; set {} to a new value (for example {}@2) to ask again",
            grace.as_secs(),
            names::SWITCHOVER_ANNOTATION,
            names::switchover_target(value)
        ),
    ))
}

/// Writes `status.lastSwitchover` whole: a field `entry` lacks is removed, whatever the
/// status held.
pub async fn record(scope: &Scope<'_>, entry: &LastSwitchover) -> Result<(), kube::Error> {
    let Scope {
        ctx,
        namespace,
        name,
        ..
    } = *scope;
    let mut value = serde_json::to_value(entry).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        for key in ["from", "to", "time", "message"] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    let patch = serde_json::json!({ "status": { "lastSwitchover": value } });
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), namespace, &cluster_resource());
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PostgresClusterStatus;
    use crate::controller::rollout::tests::pod;

    fn member(name: &str, role: &str) -> Instance {
        pod(name, role, true)
    }

    fn pending(asked: Timestamp) -> LastSwitchover {
        LastSwitchover {
            target: "any".into(),
            from: Some("a".into()),
            to: Some("b".into()),
            time: Some(asked.to_string()),
            outcome: IN_PROGRESS.into(),
            message: None,
        }
    }

    const GRACE: Duration = Duration::from_secs(40);

    #[test]
    fn a_request_is_new_until_its_outcome_is_recorded() {
        let mut cluster = PostgresCluster::new("c", Default::default());
        cluster
            .annotations_mut()
            .insert(names::SWITCHOVER_ANNOTATION.into(), " any ".into());
        assert_eq!(requested(&cluster), Some(("any".into(), None)));
        let attempt = pending(Timestamp::now());
        cluster.status = Some(PostgresClusterStatus {
            last_switchover: Some(attempt.clone()),
            ..Default::default()
        });
        assert_eq!(requested(&cluster), Some(("any".into(), Some(attempt))));
        for outcome in [SUCCEEDED, FAILED] {
            let status = cluster.status.as_mut().unwrap();
            status.last_switchover.as_mut().unwrap().outcome = outcome.into();
            assert_eq!(requested(&cluster), None, "{outcome}");
        }
        // A new value is a new request, whatever the last one's outcome.
        cluster
            .annotations_mut()
            .insert(names::SWITCHOVER_ANNOTATION.into(), "any@2".into());
        assert_eq!(requested(&cluster), Some(("any@2".into(), None)));
    }

    #[test]
    fn an_attempt_whose_primary_changed_succeeded_whoever_it_went_to() {
        let now = [member("a", "replica"), member("c", "primary")];
        let done = finish(&now, "any", &pending(Timestamp::now()), GRACE).unwrap();
        assert_eq!(done.outcome, SUCCEEDED);
        assert_eq!(
            (done.from.as_deref(), done.to.as_deref()),
            (Some("a"), Some("c"))
        );
    }

    #[test]
    fn an_attempt_with_the_old_primary_waits_out_the_grace_then_fails_and_never_repeats() {
        let now = [member("a", "primary"), member("b", "replica")];
        let (reason, message) = finish(&now, "any", &pending(Timestamp::now()), GRACE).unwrap_err();
        assert_eq!(reason, SWITCHING_OVER);
        assert!(message.contains("waiting for Patroni"), "{message}");
        let long_ago = Timestamp::now() - std::time::Duration::from_secs(41);
        let failed = finish(&now, "any", &pending(long_ago), GRACE).unwrap();
        assert_eq!(failed.outcome, FAILED);
        let message = failed.message.unwrap();
        assert!(
            message.contains("a is still the primary 40 s after")
                && message.contains("pgpilot.io/switchover to a new value (for example any@2)"),
            "{message}"
        );
        // No primary, or two: wait for Patroni, decide nothing.
        let unsettled = [member("a", "replica"), member("b", "replica")];
        assert!(finish(&unsettled, "any", &pending(long_ago), GRACE).is_err());
    }
}
