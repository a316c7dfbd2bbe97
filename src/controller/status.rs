//! Status: observed generation, phase, instances, primary, members and the conditions
//! `Resolved`, `Reconciled`, `ConfigApplied` and `Ready`. A condition's time changes only when its status flips, and a
//! status equal to the stored one is not written, so the controller never wakes itself.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    BackupInventory, ClusterMember, InstancesStatus, LastBackup, LastSwitchover, Phase,
    PostgresClusterStatus, RestoreStatus,
};

pub const RESOLVED: &str = "Resolved";
pub const RECONCILED: &str = "Reconciled";
pub const CONFIG_APPLIED: &str = "ConfigApplied";
pub const READY: &str = "Ready";
pub const ROLLING: &str = "Rolling";
pub const PAUSED: &str = "Paused";
pub const LAST_BACKUP_SUCCEEDED: &str = "LastBackupSucceeded";
pub const CONTINUOUS_ARCHIVING: &str = "ContinuousArchiving";
pub const BOOTSTRAPPED: &str = "Bootstrapped";

/// What the controller observed, from which the status follows.
#[derive(Debug, Clone)]
pub struct Observation {
    pub generation: Option<i64>,
    pub desired: i32,
    pub ready: i32,
    pub primary: Option<String>,
    /// `Err((reason, message))` when the spec was not resolved.
    pub resolved: Result<(), (String, String)>,
    /// `Err((reason, message))` when rendering or applying failed.
    pub reconciled: Result<(), (String, String)>,
    /// Whether the StatefulSet has reported any status yet.
    pub started: bool,
    /// `Err((reason, message))` while Patroni's configuration differs from the spec or a
    /// member waits for a restart.
    pub config: Result<(), (String, String)>,
    pub members: Vec<ClusterMember>,
    /// `Err((reason, message))` while a rollout replaces pods or switches over.
    pub rolling: Result<(), (String, String)>,
    /// `spec.paused`: the controller changed nothing.
    pub paused: bool,
    /// A switchover asked for by annotation that ended in this pass.
    pub switchover: Option<LastSwitchover>,
    /// `LastBackupSucceeded` (status, reason, message); `None` without repositories.
    pub backups: Option<(&'static str, String, String)>,
    /// `ContinuousArchiving` (status, reason, message); `None` without repositories.
    pub archiving: Option<(&'static str, String, String)>,
    /// The record of a backup asked for by annotation, as this pass left it.
    pub backup: Option<LastBackup>,
    /// pgBackRest's inventory as the primary listed it; `None` keeps the stored one.
    pub inventory: Option<BackupInventory>,
    /// `Bootstrapped` (status, reason, message); `None` for a cluster made by `initdb`.
    pub bootstrap: Option<(&'static str, String, String)>,
    /// The in-place restore as this pass left it; `None` keeps the stored record.
    pub restore: Option<RestoreStatus>,
}

impl Default for Observation {
    fn default() -> Self {
        Observation {
            generation: None,
            desired: 0,
            ready: 0,
            primary: None,
            resolved: Ok(()),
            reconciled: Ok(()),
            started: false,
            config: Ok(()),
            members: Vec::new(),
            rolling: Ok(()),
            paused: false,
            switchover: None,
            backups: None,
            archiving: None,
            backup: None,
            inventory: None,
            bootstrap: None,
            restore: None,
        }
    }
}

fn condition(
    type_: &str,
    ok: Result<(), (String, String)>,
    ok_reason: &str,
    ok_message: &str,
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Condition {
    let value = match ok {
        Ok(()) => ("True", ok_reason.to_owned(), ok_message.to_owned()),
        Err((r, m)) => ("False", r, m),
    };
    with_status(type_, value, generation, old, now)
}

/// A condition from `(status, reason, message)`; the transition time moves only when the
/// status does.
fn with_status(
    type_: &str,
    (status, reason, message): (&str, String, String),
    generation: Option<i64>,
    old: &[Condition],
    now: &Time,
) -> Condition {
    let previous = old.iter().find(|c| c.type_ == type_);
    let last = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// The status for an observation, given the stored one (for transition times and phase).
pub fn status(
    o: &Observation,
    old: Option<&PostgresClusterStatus>,
    now: Time,
) -> PostgresClusterStatus {
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let instances_ready = o.desired > 0 && o.ready >= o.desired && o.primary.is_some();
    // Paused, the controller checks nothing beyond the instances themselves.
    let all_ready = instances_ready && (o.config.is_ok() || o.paused);
    // WAL that does not reach the repositories is a cluster that cannot be restored to now.
    let archiving_failed = o
        .archiving
        .as_ref()
        .filter(|(status, _, _)| *status == "False");
    // An in-place restore that has not ended replaces the instances' data: never Ready.
    let restoring = o.restore.as_ref().filter(|r| !r.finished());
    let ready = if let Some(r) = restoring {
        Err((
            "Restoring".to_owned(),
            format!(
                "restore {} ({}): {}",
                r.id,
                r.phase,
                r.message.clone().unwrap_or_default()
            ),
        ))
    } else if let (true, Some((_, _, message))) = (all_ready, archiving_failed) {
        Err(("ArchivingFailed".to_owned(), message.clone()))
    } else if all_ready {
        Ok(())
    } else if let (true, Err((reason, message))) = (instances_ready, &o.config) {
        Err((
            "ConfigNotApplied".to_owned(),
            format!("{reason}: {message}"),
        ))
    } else if o.primary.is_none() {
        Err((
            "NoPrimary".to_owned(),
            format!(
                "{}/{} instances ready, no primary elected",
                o.ready, o.desired
            ),
        ))
    } else {
        Err((
            "InstancesNotReady".to_owned(),
            format!("{}/{} instances ready", o.ready, o.desired),
        ))
    };
    let was_running = matches!(
        old.and_then(|s| s.phase),
        Some(Phase::Running | Phase::Degraded)
    );
    let phase = if o.resolved.is_err() || (o.reconciled.is_err() && !o.paused) {
        Phase::Failed
    } else if o.rolling.is_err() || restoring.is_some() {
        Phase::Updating
    } else if all_ready && archiving_failed.is_some() {
        Phase::Degraded
    } else if all_ready {
        Phase::Running
    } else if instances_ready {
        Phase::Updating
    } else if was_running {
        Phase::Degraded
    } else if o.started {
        Phase::Creating
    } else {
        Phase::Pending
    };
    // True while a rollout runs: its reason and message say what it does now.
    let rolling = match &o.rolling {
        Ok(()) => (
            "False",
            "UpToDate".to_owned(),
            "every pod runs the current template".to_owned(),
        ),
        Err((reason, message)) => ("True", reason.clone(), message.clone()),
    };
    let mut conditions = vec![
        condition(
            RESOLVED,
            o.resolved.clone(),
            "Resolved",
            "the spec is complete",
            o.generation,
            old_conditions,
            &now,
        ),
        condition(
            RECONCILED,
            o.reconciled.clone(),
            "Applied",
            "every child object matches the spec",
            o.generation,
            old_conditions,
            &now,
        ),
        condition(
            CONFIG_APPLIED,
            o.config.clone(),
            "Applied",
            "Patroni's configuration equals the spec and no member waits for a restart",
            o.generation,
            old_conditions,
            &now,
        ),
        condition(
            READY,
            ready,
            "AllInstancesReady",
            &format!("{0}/{0} instances ready", o.desired),
            o.generation,
            old_conditions,
            &now,
        ),
        with_status(ROLLING, rolling, o.generation, old_conditions, &now),
        with_status(
            PAUSED,
            if o.paused {
                (
                    "True",
                    "Paused".into(),
                    "spec.paused: pgpilot changes nothing for this cluster".into(),
                )
            } else {
                (
                    "False",
                    "Managed".into(),
                    "pgpilot keeps the cluster equal to its spec".into(),
                )
            },
            o.generation,
            old_conditions,
            &now,
        ),
    ];
    if let Some(bootstrap) = &o.bootstrap {
        conditions.push(with_status(
            BOOTSTRAPPED,
            bootstrap.clone(),
            o.generation,
            old_conditions,
            &now,
        ));
    }
    if let Some(archiving) = &o.archiving {
        conditions.push(with_status(
            CONTINUOUS_ARCHIVING,
            archiving.clone(),
            o.generation,
            old_conditions,
            &now,
        ));
    }
    if let Some(backups) = &o.backups {
        conditions.push(with_status(
            LAST_BACKUP_SUCCEEDED,
            backups.clone(),
            o.generation,
            old_conditions,
            &now,
        ));
    }
    PostgresClusterStatus {
        observed_generation: o.generation,
        phase: Some(phase),
        instances: Some(InstancesStatus {
            desired: o.desired,
            ready: o.ready,
        }),
        primary: o.primary.clone(),
        conditions,
        members: o.members.clone(),
        last_switchover: o
            .switchover
            .clone()
            .or_else(|| old.and_then(|s| s.last_switchover.clone())),
        last_backup: o
            .backup
            .clone()
            .or_else(|| old.and_then(|s| s.last_backup.clone())),
        // Kept from the last listing until the primary lists again (a new primary lists
        // once promoted); gone with the repositories.
        backups: o.archiving.as_ref().and_then(|_| {
            o.inventory
                .clone()
                .or_else(|| old.and_then(|s| s.backups.clone()))
        }),
        restore: o
            .restore
            .clone()
            .or_else(|| old.and_then(|s| s.restore.clone())),
    }
}

/// A JSON merge patch (RFC 7386) that turns `old` into `new`. What `new` lacks is sent as
/// `null`: a merge patch of `new` alone would keep every field that became empty (a
/// primary that is gone, a message no longer set).
pub fn merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                let p = match o.get(k) {
                    Some(ov) if ov == v => continue,
                    Some(ov) => merge_patch(ov, v),
                    None => v.clone(),
                };
                patch.insert(k.clone(), p);
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

pub fn ready_replicas(sts: Option<&StatefulSet>) -> (i32, bool) {
    let status = sts.and_then(|s| s.status.as_ref());
    (
        status.and_then(|s| s.ready_replicas).unwrap_or(0),
        status.is_some(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_removes_what_the_new_status_lacks() {
        let old =
            serde_json::json!({ "primary": "pg-0", "phase": "Running", "x": { "a": 1, "b": 2 } });
        let new = serde_json::json!({ "phase": "Degraded", "x": { "a": 1 } });
        let patch = merge_patch(&old, &new);
        assert_eq!(
            patch,
            serde_json::json!({ "primary": null, "phase": "Degraded", "x": { "b": null } })
        );
        // Applied as RFC 7386 says, it gives exactly `new`.
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &patch);
        assert_eq!(applied, new);
    }
    use k8s_openapi::jiff::Timestamp;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn obs(ready: i32, primary: bool) -> Observation {
        Observation {
            generation: Some(3),
            desired: 2,
            ready,
            primary: primary.then(|| "pg-0".to_owned()),
            resolved: Ok(()),
            reconciled: Ok(()),
            started: true,
            ..Default::default()
        }
    }

    #[test]
    fn failing_archiving_is_not_ready() {
        let mut o = obs(2, true);
        o.archiving = Some((
            "False",
            "ArchivePushFailed".into(),
            "pg-0: archive-push of WAL segment X failed".into(),
        ));
        let s = status(&o, None, t(10));
        let get = |s: &PostgresClusterStatus, type_: &str| {
            let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
            (c.status.clone(), c.reason.clone(), c.message.clone())
        };
        assert_eq!(s.phase, Some(Phase::Degraded));
        let (status_, reason, message) = get(&s, READY);
        assert_eq!(
            (status_.as_str(), reason.as_str()),
            ("False", "ArchivingFailed")
        );
        assert!(message.contains("archive-push"), "{message}");
        assert_eq!(get(&s, CONTINUOUS_ARCHIVING).1, "ArchivePushFailed");
        // Fixed: Ready again. Unknown (no report yet) does not hold Ready back.
        for (st, reason) in [("True", "Archiving"), ("Unknown", "NoReport")] {
            o.archiving = Some((st, reason.into(), String::new()));
            let s = status(&o, Some(&s), t(20));
            assert_eq!(s.phase, Some(Phase::Running), "{st}");
            assert_eq!(get(&s, READY).0, "True", "{st}");
        }
        // Without repositories there is no such condition.
        o.archiving = None;
        let s = status(&o, None, t(30));
        assert!(!s.conditions.iter().any(|c| c.type_ == CONTINUOUS_ARCHIVING));
    }

    #[test]
    fn phases_and_conditions() {
        let creating = status(&obs(0, false), None, t(10));
        assert_eq!(creating.phase, Some(Phase::Creating));
        let ready = creating
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NoPrimary")
        );

        let running = status(&obs(2, true), Some(&creating), t(20));
        assert_eq!(running.phase, Some(Phase::Running));
        let ready = running
            .conditions
            .iter()
            .find(|c| c.type_ == READY)
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time.clone()),
            ("True", t(20))
        );
        // Reconciled stayed True: its time is the first one.
        let rec = running
            .conditions
            .iter()
            .find(|c| c.type_ == RECONCILED)
            .unwrap();
        assert_eq!(rec.last_transition_time, t(10));

        let degraded = status(&obs(1, true), Some(&running), t(30));
        assert_eq!(degraded.phase, Some(Phase::Degraded));
        assert_eq!(
            degraded
                .conditions
                .iter()
                .find(|c| c.type_ == READY)
                .unwrap()
                .observed_generation,
            Some(3)
        );
    }

    #[test]
    fn an_unchanged_observation_gives_an_identical_status() {
        let first = status(&obs(2, true), None, t(10));
        assert_eq!(status(&obs(2, true), Some(&first), t(99)), first);
    }

    #[test]
    fn failures_are_failed() {
        let mut o = obs(2, true);
        o.reconciled = Err(("ApplyFailed".into(), "boom".into()));
        let s = status(&o, None, t(1));
        assert_eq!(s.phase, Some(Phase::Failed));
        assert_eq!(s.conditions[1].status, "False");
    }

    #[test]
    fn a_configuration_being_applied_is_updating_and_not_ready() {
        let mut o = obs(2, true);
        o.config = Err(("PendingRestart".into(), "pg-1: max_connections".into()));
        let s = status(&o, None, t(1));
        assert_eq!(s.phase, Some(Phase::Updating));
        let get = |t: &str| s.conditions.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(
            (
                get(CONFIG_APPLIED).status.as_str(),
                get(CONFIG_APPLIED).reason.as_str()
            ),
            ("False", "PendingRestart")
        );
        assert_eq!(
            (get(READY).status.as_str(), get(READY).reason.as_str()),
            ("False", "ConfigNotApplied")
        );
    }
}
