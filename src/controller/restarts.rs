//! Restarts that Patroni asks for. A parameter of PostgreSQL's `postmaster` context takes
//! effect only at a restart; Patroni applies the new configuration, flags the member
//! `pending_restart` and waits to be told. pgpilot restarts flagged members one at a time,
//! each back and streaming before the next:
//!
//! - replicas first, the primary last: a standby cannot run with a lower
//!   `max_connections` (and four others) than its primary, so a primary raised first would
//!   stop its standbys' replay;
//! - the primary first when it lowers one of those five: then each standby restarts once,
//!   after the primary runs the new value (a standby restarted earlier keeps the primary's
//!   higher value, which Patroni reads from `pg_controldata`, and needs a second restart).
//!
//! In a synchronous mode, nothing restarts while Patroni names no synchronous standby in its
//! `C-sync` key: a standby back from its restart streams (and even shows `sync` in
//! `pg_stat_replication`) up to a loop before Patroni names it, and a primary lost in that
//! window would have no member Patroni may promote.
//!
//! `plan` decides from the members' live states (`GET /patroni`) and the named synchronous
//! standbys; it is pure.

use crate::patroni::MemberState;
use crate::patroni::member::unnamed_sync_standby;
use crate::validate::pg_settings::HOT_STANDBY_MINIMUMS;

#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Nothing is pending.
    Done,
    /// Something must settle first (a member starting, a standby not streaming yet).
    Wait(String),
    /// Restart this member now.
    Restart { member: String, why: String },
}

/// The next step for members `(name, live state)`; `sync` holds the standbys Patroni names
/// synchronous, `None` in the asynchronous mode.
pub fn plan(members: &[(String, MemberState)], sync: Option<&[String]>) -> Next {
    let pending: Vec<&(String, MemberState)> =
        members.iter().filter(|(_, s)| s.pending_restart).collect();
    if pending.is_empty() {
        return Next::Done;
    }
    for (name, s) in members {
        if !s.is_running() {
            return Next::Wait(format!("{name} is {}", display_state(s)));
        }
        if !s.is_primary() && !s.is_streaming() {
            return Next::Wait(format!("{name} is not streaming yet"));
        }
    }
    let replicas = members
        .iter()
        .filter(|(_, s)| !s.is_primary())
        .map(|(name, _)| name.as_str());
    if let Some(why) = unnamed_sync_standby(sync, replicas) {
        return Next::Wait(why);
    }
    let primary = pending.iter().find(|(_, s)| s.is_primary());
    if let Some((name, s)) = primary
        && let Some(lowered) = lowered_sensitive(s)
    {
        return Next::Restart {
            member: name.clone(),
            why: format!(
                "primary first: it lowers {lowered}, which its standbys must follow, not lead"
            ),
        };
    }
    let replica = pending.iter().find(|(_, s)| !s.is_primary());
    match (replica, primary) {
        (Some((name, s)), _) => Next::Restart {
            member: name.clone(),
            why: format!("replicas first ({})", reasons(s)),
        },
        (None, Some((name, s))) => Next::Restart {
            member: name.clone(),
            why: format!("the primary last ({})", reasons(s)),
        },
        (None, None) => Next::Done,
    }
}

fn display_state(s: &MemberState) -> &str {
    if s.state.is_empty() {
        "not reporting"
    } else {
        &s.state
    }
}

/// The pending parameters as `name old → new`.
fn reasons(s: &MemberState) -> String {
    if s.pending_restart_reason.is_empty() {
        return "pending restart".into();
    }
    s.pending_restart_reason
        .iter()
        .map(|(k, v)| format!("{k} {} → {}", v.old_value, v.new_value))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first hot-standby-sensitive setting this member is about to lower.
fn lowered_sensitive(s: &MemberState) -> Option<String> {
    s.pending_restart_reason
        .iter()
        .filter(|(k, _)| HOT_STANDBY_MINIMUMS.contains(&k.to_ascii_lowercase().as_str()))
        .find(|(_, v)| {
            matches!(
                (v.old_value.trim().parse::<i64>(), v.new_value.trim().parse::<i64>()),
                (Ok(old), Ok(new)) if new < old
            )
        })
        .map(|(k, v)| format!("{k} {} → {}", v.old_value, v.new_value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patroni::ParamChange;

    fn member(
        name: &str,
        role: &str,
        pending: Option<(&str, &str, &str)>,
    ) -> (String, MemberState) {
        let mut s = MemberState {
            state: "running".into(),
            role: role.into(),
            replication_state: (role == "replica").then(|| "streaming".into()),
            ..Default::default()
        };
        if let Some((k, old, new)) = pending {
            s.pending_restart = true;
            s.pending_restart_reason.insert(
                k.into(),
                ParamChange {
                    old_value: old.into(),
                    new_value: new.into(),
                },
            );
        }
        (name.into(), s)
    }

    fn restarts(next: Next) -> String {
        match next {
            Next::Restart { member, .. } => member,
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn nothing_pending_is_done() {
        let m = [member("a", "primary", None), member("b", "replica", None)];
        assert_eq!(plan(&m, None), Next::Done);
    }

    #[test]
    fn an_increase_restarts_replicas_then_the_primary() {
        let up = Some(("max_connections", "100", "200"));
        let mut m = vec![
            member("a", "primary", up),
            member("b", "replica", up),
            member("c", "replica", up),
        ];
        assert_eq!(restarts(plan(&m, None)), "b");
        m[1] = member("b", "replica", None);
        assert_eq!(restarts(plan(&m, None)), "c");
        m[2] = member("c", "replica", None);
        assert_eq!(restarts(plan(&m, None)), "a");
    }

    #[test]
    fn a_decrease_of_a_sensitive_setting_restarts_the_primary_first() {
        let down = Some(("max_connections", "200", "50"));
        let m = [member("b", "replica", down), member("a", "primary", down)];
        assert_eq!(restarts(plan(&m, None)), "a");
        // Other settings keep the usual order, whatever the direction.
        let other = Some(("shared_buffers", "256MB", "128MB"));
        let m = [member("a", "primary", other), member("b", "replica", other)];
        assert_eq!(restarts(plan(&m, None)), "b");
    }

    #[test]
    fn sync_modes_wait_for_a_named_synchronous_standby() {
        let up = Some(("max_connections", "100", "200"));
        let m = [
            member("a", "primary", up),
            member("b", "replica", None),
            member("c", "replica", up),
        ];
        let none: Vec<String> = vec![];
        assert_eq!(
            plan(&m, Some(&none)),
            Next::Wait("Patroni names no synchronous standby yet".into())
        );
        // Naming the primary (or a member that left) does not count.
        let stale = vec!["a".to_owned(), "z".to_owned()];
        assert!(matches!(plan(&m, Some(&stale)), Next::Wait(_)));
        assert_eq!(restarts(plan(&m, Some(&["b".to_owned()]))), "c");
        // A lone primary has no standby to name.
        let alone = [member("a", "primary", up)];
        assert_eq!(restarts(plan(&alone, Some(&none))), "a");
    }

    #[test]
    fn waits_while_a_member_is_not_back() {
        let up = Some(("max_wal_senders", "10", "12"));
        let mut starting = member("b", "replica", None);
        starting.1.state = "starting".into();
        let m = [
            member("a", "primary", up),
            starting,
            member("c", "replica", up),
        ];
        assert_eq!(plan(&m, None), Next::Wait("b is starting".into()));
        let mut behind = member("b", "replica", None);
        behind.1.replication_state = Some("in archive recovery".into());
        let m = [member("a", "primary", up), behind];
        assert_eq!(plan(&m, None), Next::Wait("b is not streaming yet".into()));
    }
}
