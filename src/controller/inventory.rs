//! `status.backups`: pgBackRest's inventory as the primary lists it. A Patroni callback
//! (`report.py inventory`, on reload and on becoming primary) runs `pgbackrest info` in the
//! primary's container, which reaches every repository through the repository host (so no
//! object-store key enters a database pod and no exec is needed), and writes the result on
//! the pod (annotation `pgpilot.io/backups`). The controller asks for a new listing with
//! Patroni's `POST /reload` after a backup Job completed and every half hour, and copies
//! the listing into the status, bounded.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

use crate::api::{BackupEntry, BackupInventory, RecoveryWindow, RepoInventory};
use crate::render::INVENTORY_ANNOTATION;

/// How old a listing may grow before the controller asks for a new one.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30 * 60);
/// Longest text copied from the annotation (written inside a database pod) into the status.
const TEXT_MAX: usize = 200;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Listing {
    time: Option<String>,
    error: Option<String>,
    repos: Vec<RawRepo>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawRepo {
    name: String,
    status: Option<String>,
    wal_min: Option<String>,
    wal_max: Option<String>,
    backups: Vec<RawBackup>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct RawBackup {
    label: Option<String>,
    #[serde(rename = "type")]
    type_: Option<String>,
    start: Option<i64>,
    stop: Option<i64>,
    size: Option<i64>,
    repo_size: Option<i64>,
    repo_delta: Option<i64>,
    wal_start: Option<String>,
    wal_stop: Option<String>,
    error: bool,
}

/// Printable, bounded text: the annotation is written from inside a database pod.
fn text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(TEXT_MAX)
        .collect()
}

fn time(seconds: Option<i64>) -> Option<String> {
    Timestamp::from_second(seconds?).ok().map(|t| t.to_string())
}

/// When the inventory in hand was listed, if it says.
pub fn listed_at(inventory: Option<&BackupInventory>) -> Option<Timestamp> {
    inventory?.time.as_deref()?.parse().ok()
}

/// Whether to ask the primary for a new listing: none yet, one older than a backup that
/// completed since (`newest_backup`), or one older than [`REFRESH_EVERY`].
pub fn stale(listed: Option<Timestamp>, newest_backup: Option<Timestamp>, now: Timestamp) -> bool {
    let Some(listed) = listed else { return true };
    let every = i64::try_from(REFRESH_EVERY.as_secs()).unwrap_or(i64::MAX);
    newest_backup.is_some_and(|b| b > listed) || now.as_second() - listed.as_second() >= every
}

/// The inventory for the status from the primary's listing, each repository's newest
/// `limit` backups; `None` without a listing.
pub fn inventory(pods: &[Pod], primary: Option<&str>, limit: usize) -> Option<BackupInventory> {
    let raw = super::members::annotation(pods, primary?, INVENTORY_ANNOTATION)?;
    let listing: Listing = match serde_json::from_str(raw) {
        Ok(l) => l,
        Err(e) => {
            return Some(BackupInventory {
                error: Some(format!("the primary's listing cannot be read: {e}")),
                ..Default::default()
            });
        }
    };
    let mut repos = Vec::new();
    let mut stops = Vec::new();
    for r in listing.repos.into_iter().take(4) {
        let mut backups: Vec<BackupEntry> = r
            .backups
            .into_iter()
            .filter_map(|b| {
                if !b.error
                    && let Some(stop) = b.stop
                {
                    stops.push(stop);
                }
                Some(BackupEntry {
                    label: text(&b.label?),
                    type_: text(&b.type_.unwrap_or_default()),
                    start: time(b.start),
                    stop: time(b.stop),
                    size: b.size,
                    repo_size: b.repo_size,
                    repo_delta: b.repo_delta,
                    wal_start: b.wal_start.as_deref().map(text),
                    wal_stop: b.wal_stop.as_deref().map(text),
                    error: b.error,
                })
            })
            .collect();
        let omitted = backups.len().saturating_sub(limit);
        backups.drain(..omitted);
        repos.push(RepoInventory {
            name: text(&r.name),
            status: r.status.as_deref().map(text),
            wal_min: r.wal_min.as_deref().map(text),
            wal_max: r.wal_max.as_deref().map(text),
            backups,
            omitted: (omitted > 0).then_some(omitted as i64),
        });
    }
    let window = match (stops.iter().min(), stops.iter().max()) {
        (Some(&earliest), Some(&latest)) => time(Some(earliest))
            .zip(time(Some(latest)))
            .map(|(earliest, latest)| RecoveryWindow { earliest, latest }),
        _ => None,
    };
    Some(BackupInventory {
        time: listing.time.as_deref().map(text),
        error: listing.error.as_deref().map(text),
        recovery_window: window,
        repos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn pod(name: &str, listing: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.annotations = Some(BTreeMap::from([(
            INVENTORY_ANNOTATION.into(),
            listing.into(),
        )]));
        p
    }

    const LISTING: &str = r#"{"time":"2026-12-01T01:00:00Z","repos":[{"name":"repo1","status":"ok","walMin":"000000010000000000000001","walMax":"000000010000000000000009","backups":[
        {"label":"20261201-004512F","type":"full","start":1764549900,"stop":1764549912,"size":23000000,"repoSize":3000000,"repoDelta":3000000,"walStart":"000000010000000000000004","walStop":"000000010000000000000004","error":false},
        {"label":"20261201-004512F_20261201-005000I","type":"incr","start":1764550200,"stop":1764550206,"size":23000000,"repoSize":3100000,"repoDelta":100000,"walStart":"000000010000000000000006","walStop":"000000010000000000000006","error":false},
        {"label":"20261201-004512F_20261201-005500I","type":"incr","start":1764550500,"stop":1764550506,"size":23000000,"repoSize":3200000,"repoDelta":100000,"walStart":"000000010000000000000008","walStop":"000000010000000000000008","error":false}]}]}"#;

    #[test]
    fn the_primarys_listing_newest_first_bounded() {
        let pods = [pod("pg-0", LISTING), pod("pg-1", "{}")];
        let inv = inventory(&pods, Some("pg-0"), 2).unwrap();
        assert_eq!(inv.time.as_deref(), Some("2026-12-01T01:00:00Z"));
        let repo = &inv.repos[0];
        assert_eq!(repo.name, "repo1");
        assert_eq!(repo.wal_max.as_deref(), Some("000000010000000000000009"));
        let labels: Vec<&str> = repo.backups.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "20261201-004512F_20261201-005000I",
                "20261201-004512F_20261201-005500I"
            ]
        );
        assert_eq!(repo.omitted, Some(1));
        let b = &repo.backups[0];
        assert_eq!(
            (b.type_.as_str(), b.size, b.repo_delta),
            ("incr", Some(23000000), Some(100000))
        );
        assert_eq!(b.stop.as_deref(), Some("2025-12-01T00:50:06Z"));
        // The window spans every backup listed, also those left out of the status.
        let w = inv.recovery_window.unwrap();
        assert_eq!(
            (w.earliest.as_str(), w.latest.as_str()),
            ("2025-12-01T00:45:12Z", "2025-12-01T00:55:06Z")
        );
        // A replica's listing is not read; no primary, no inventory.
        assert!(inventory(&pods, Some("pg-1"), 2).unwrap().repos.is_empty());
        assert_eq!(inventory(&pods, None, 2), None);
        assert_eq!(
            listed_at(inventory(&pods, Some("pg-0"), 2).as_ref()),
            Some("2026-12-01T01:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn a_broken_listing_says_so_and_hostile_text_is_bounded() {
        let inv = inventory(&[pod("pg-0", "not json")], Some("pg-0"), 5).unwrap();
        assert!(inv.error.unwrap().contains("cannot be read"));
        let long = format!(
            r#"{{"time":"t","error":"{}\n","repos":[]}}"#,
            "x".repeat(5000)
        );
        let inv = inventory(&[pod("pg-0", &long)], Some("pg-0"), 5).unwrap();
        let error = inv.error.unwrap();
        assert!(error.len() <= TEXT_MAX && !error.contains('\n'));
    }

    #[test]
    fn a_listing_is_refreshed_after_a_backup_and_every_half_hour() {
        let t = |s: i64| Timestamp::from_second(s).unwrap();
        assert!(stale(None, None, t(0)));
        assert!(!stale(Some(t(1000)), Some(t(900)), t(1100)));
        assert!(stale(Some(t(1000)), Some(t(1001)), t(1100)));
        assert!(stale(Some(t(1000)), None, t(1000 + 30 * 60)));
    }
}
