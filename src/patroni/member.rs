//! What each member publishes about itself: Patroni's Kubernetes DCS writes it as JSON into
//! the `status` annotation of the member's pod on every change, so the controller reads
//! every member's role, state and pending restart from the pods it already lists, with no
//! request to the members.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

/// The pod annotation Patroni writes.
pub const STATUS_ANNOTATION: &str = "status";

/// One member's published state (the fields pgpilot reads; Patroni adds more).
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
pub struct MemberStatus {
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub pending_restart: bool,
    /// Per parameter, the value running and the value configured.
    #[serde(default)]
    pub pending_restart_reason: BTreeMap<String, ParamChange>,
    #[serde(default)]
    pub timeline: Option<i64>,
    /// The primary's write position, or a standby's replayed position.
    #[serde(default)]
    pub xlog_location: Option<u64>,
    /// `streaming` or `in archive recovery`, for standbys.
    #[serde(default)]
    pub replication_state: Option<String>,
    /// When PostgreSQL started (`GET /patroni` only).
    #[serde(default)]
    pub postmaster_start_time: Option<String>,
}

/// A parameter that waits for a restart: what runs and what is configured, as Patroni
/// prints them (units included).
#[derive(Deserialize, Debug, Clone, Default, PartialEq)]
pub struct ParamChange {
    #[serde(default, deserialize_with = "text")]
    pub old_value: String,
    #[serde(default, deserialize_with = "text")]
    pub new_value: String,
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

impl MemberStatus {
    /// Parses the annotation; `None` when it is not Patroni's JSON.
    pub fn parse(annotation: &str) -> Option<MemberStatus> {
        serde_json::from_str(annotation).ok()
    }

    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// The leader (Patroni 3 and later say `primary`, earlier ones `master`).
    pub fn is_primary(&self) -> bool {
        self.role == "primary" || self.role == "master"
    }

    pub fn is_streaming(&self) -> bool {
        self.replication_state.as_deref() == Some("streaming")
    }
}

/// A member as the controller sees it: its pod's name and IP, and what Patroni published.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub ip: Option<IpAddr>,
    /// Where its REST API answers (`None` without an IP).
    pub api: Option<super::Endpoint>,
    /// `None` until Patroni publishes (or when the annotation is unreadable).
    pub status: Option<MemberStatus>,
}

impl Member {
    pub fn is_running_primary(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.is_primary() && s.is_running())
    }

    pub fn pending_restart(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.pending_restart)
    }
}

/// The running primary among the members, when there is exactly one.
pub fn leader(members: &[Member]) -> Option<&Member> {
    let mut primaries = members.iter().filter(|m| m.is_running_primary());
    match (primaries.next(), primaries.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    }
}

/// The annotation of the `C-sync` Endpoints in which Patroni names the synchronous
/// standbys, the members it would promote in a synchronous mode.
pub const SYNC_STANDBY_ANNOTATION: &str = "sync_standby";

/// The role `status.members` gives a replica Patroni names synchronous (as Patroni's own
/// `GET /cluster` does).
pub const SYNC_STANDBY_ROLE: &str = "sync_standby";

/// The names in a `sync_standby` annotation (Patroni writes them sorted, comma-separated).
pub fn sync_standbys(annotation: Option<&str>) -> Vec<String> {
    annotation
        .into_iter()
        .flat_map(|a| a.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Why a step that could take a standby down must wait: in a synchronous mode (`sync`
/// holds the standbys Patroni names), a cluster with `replicas` but none of them named has
/// no member Patroni may promote. `None` when nothing stands in the way.
pub fn unnamed_sync_standby<'a>(
    sync: Option<&[String]>,
    mut replicas: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let named = sync?;
    let mut any = false;
    let found = replicas.any(|r| {
        any = true;
        named.iter().any(|n| n == r)
    });
    (any && !found).then(|| "Patroni names no synchronous standby yet".to_owned())
}

/// Bytes of WAL a member is behind the leader, when both published a position.
pub fn lag_bytes(member: &Member, leader: &Member) -> Option<u64> {
    let at = member.status.as_ref()?.xlog_location?;
    let head = leader.status.as_ref()?.xlog_location?;
    Some(head.saturating_sub(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As Patroni 4.1 writes it for a standby with a pending restart.
    const REPLICA: &str = r#"{"conn_url":"postgres://198.18.0.2:5432/postgres","api_url":"http://198.18.0.2:8008/patroni","state":"running","role":"replica","version":"4.1.5","pending_restart":true,"pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"200"}},"xlog_location":67108864,"replay_lsn":67108864,"receive_lsn":67108864,"replication_state":"streaming","timeline":1}"#;

    #[test]
    fn reads_what_patroni_publishes() {
        let s = MemberStatus::parse(REPLICA).unwrap();
        assert!(s.is_running() && !s.is_primary() && s.is_streaming() && s.pending_restart);
        assert_eq!(
            s.pending_restart_reason["max_connections"],
            ParamChange {
                old_value: "100".into(),
                new_value: "200".into()
            }
        );
        assert_eq!((s.timeline, s.xlog_location), (Some(1), Some(67108864)));
    }

    #[test]
    fn unreadable_annotations_are_none() {
        assert_eq!(MemberStatus::parse("not json"), None);
        assert_eq!(MemberStatus::parse(r#"{"state": 3}"#), None);
        // Numbers where Patroni writes strings are read as text.
        let s = MemberStatus::parse(
            r#"{"pending_restart_reason":{"max_connections":{"old_value":100,"new_value":50}}}"#,
        )
        .unwrap();
        assert_eq!(s.pending_restart_reason["max_connections"].new_value, "50");
    }

    #[test]
    fn sync_standbys_are_a_comma_separated_list() {
        assert_eq!(sync_standbys(Some("pg-1,pg-2")), ["pg-1", "pg-2"]);
        assert_eq!(sync_standbys(Some("pg-1")), ["pg-1"]);
        assert!(sync_standbys(Some("")).is_empty());
        assert!(sync_standbys(None).is_empty());
    }

    fn member(name: &str, role: &str, state: &str, lsn: u64) -> Member {
        Member {
            name: name.into(),
            ip: None,
            api: None,
            status: Some(MemberStatus {
                role: role.into(),
                state: state.into(),
                xlog_location: Some(lsn),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn one_running_primary_leads() {
        let a = member("a", "primary", "running", 500);
        let b = member("b", "replica", "running", 200);
        assert_eq!(leader(&[a.clone(), b.clone()]).map(|m| &*m.name), Some("a"));
        assert_eq!(lag_bytes(&b, &a), Some(300));
        // Two primaries (a split brain being resolved) or none: no leader to talk to.
        let c = member("c", "primary", "running", 100);
        assert_eq!(leader(&[a.clone(), c]), None);
        assert_eq!(leader(&[member("a", "primary", "stopped", 0), b]), None);
    }
}
