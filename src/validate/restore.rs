//! `spec.bootstrap.restore`: the source, the repository and a target that pgBackRest and
//! PostgreSQL will read the way the user meant it. A restore that would stop at the wrong
//! point (a time without an offset, `set` with a target it does not bound, options that
//! disagree with the target) is refused before anything is stored.

use std::collections::BTreeMap;

use crate::api::{PostgresCluster, RestoreTarget, RestoreTargetType};
use crate::names;
use crate::resolve::restore::{self as resolved, DERIVED_OPTIONS, USER_OPTIONS};

use super::backup::{REPO_NAMES, repo};
use super::field::{Errors, Path};

/// Options pgpilot sets itself for every restore: where the data and the repository are.
const OWNED_OPTIONS: [&str; 8] = [
    "stanza",
    "config",
    "delta",
    "force",
    "pg1-path",
    "repo",
    "lock-path",
    "link-all",
];

pub fn bootstrap(c: &PostgresCluster, old: Option<&PostgresCluster>, e: &mut Errors) {
    let Some(r) = c.spec.bootstrap.as_ref().and_then(|b| b.restore.as_ref()) else {
        return;
    };
    let p = Path::new("spec").child("bootstrap").child("restore");
    if r.cluster.is_empty() {
        e.required(&p.child("cluster"), "the cluster whose backup is restored");
    } else if !names::is_dns1035_label(&r.cluster) {
        e.invalid_str(&p.child("cluster"), &r.cluster, "must be a cluster name");
    } else if c.metadata.name.as_deref() == Some(r.cluster.as_str()) {
        e.invalid_str(
            &p.child("cluster"),
            &r.cluster,
            "a cluster cannot be created from its own backups; to go back in time in place, use spec.restore",
        );
    }
    if !REPO_NAMES.contains(&r.repo.as_str()) {
        e.not_supported(&p.child("repo"), &r.repo, &REPO_NAMES);
    }
    if let Some(source) = &r.repository {
        let rp = p.child("repository");
        let kinds = [
            source.s3.is_some(),
            source.gcs.is_some(),
            source.azure.is_some(),
        ];
        match kinds.iter().filter(|k| **k).count() {
            0 => e.required(
                &rp,
                "one of s3, gcs or azure: the object store the source cluster's repository was in",
            ),
            1 => repo(&rp, &source.as_repo(&r.repo), e),
            _ => e.forbidden(&rp, "only one of s3, gcs or azure may be set"),
        }
    }
    let default = RestoreTarget::default();
    let target = r.target.as_ref().unwrap_or(&default);
    self::target(&p.child("target"), target, e);
    self::options(&p.child("options"), r.options.as_ref(), target, e);
    if old.is_some() {
        return;
    }
    e.warn(
        &p,
        format!(
            "the cluster starts from a backup of {:?} ({}): Job {} restores it before any instance starts",
            r.cluster,
            r.repo,
            names::restore_job(c.metadata.name.as_deref().unwrap_or("CLUSTER"))
        ),
    );
}

/// What admission found of the cluster a new cluster is restored from (the webhook looks
/// it up when it runs inside the operator, which reads clusters anyway).
#[derive(Debug)]
pub enum SourceLookup {
    /// The source cluster as stored.
    Found(Box<PostgresCluster>),
    /// No cluster of that name in the namespace.
    Missing,
    /// The API server did not say; why.
    Failed(String),
}

/// The source of `c`'s `bootstrap.restore` as admission found it, for a restore that reads
/// the source's spec (no inline `repository`). A repository the source lacks and another
/// major version are refused: no restore could read them. A source that does not exist
/// (yet) or could not be read is a warning: the restore waits for it, and the controller
/// checks the same when it runs.
pub fn source(c: &PostgresCluster, found: &SourceLookup, e: &mut Errors) {
    let Some(r) = c.spec.bootstrap.as_ref().and_then(|b| b.restore.as_ref()) else {
        return;
    };
    if r.repository.is_some() {
        return;
    }
    let p = Path::new("spec").child("bootstrap").child("restore");
    let source = match found {
        SourceLookup::Found(source) => source,
        SourceLookup::Missing => {
            return e.warn(
                &p.child("cluster"),
                format!(
                    "no PostgresCluster {:?} in this namespace (yet): the restore waits for it (condition Bootstrapped, reason SourceNotFound); the object-store repository of a deleted cluster can be described in spec.bootstrap.restore.repository",
                    r.cluster
                ),
            );
        }
        SourceLookup::Failed(why) => {
            return e.warn(
                &p.child("cluster"),
                format!(
                    "cluster {:?} could not be read ({why}): its repositories and version are checked when the restore runs",
                    r.cluster
                ),
            );
        }
    };
    let repos: Vec<&str> = source
        .spec
        .backup_repos()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    if !repos.contains(&r.repo.as_str()) {
        e.invalid_str(
            &p.child("repo"),
            &r.repo,
            if repos.is_empty() {
                format!("cluster {:?} has no backup repository", r.cluster)
            } else {
                format!(
                    "is not a repository of cluster {:?} ({})",
                    r.cluster,
                    repos.join(", ")
                )
            },
        );
    }
    if let (Some(ours), Some(theirs)) = (c.spec.postgres_version, source.spec.postgres_version)
        && ours != theirs
    {
        e.invalid(
            &Path::new("spec").child("postgresVersion"),
            ours.to_string(),
            format!(
                "must be {theirs}, the major version of cluster {:?}: a backup restores only into the PostgreSQL major that took it",
                r.cluster
            ),
        );
    }
    let on_volume = source
        .spec
        .backup_repos()
        .iter()
        .any(|x| x.name == r.repo && x.volume.is_some());
    if on_volume && source.metadata.deletion_timestamp.is_some() {
        e.warn(
            &p.child("cluster"),
            format!(
                "cluster {:?} is being deleted, and its volume repository {} with it: the restore may find nothing to read",
                r.cluster, r.repo
            ),
        );
    }
}

fn target(p: &Path, t: &RestoreTarget, e: &mut Errors) {
    let kind = t.type_.unwrap_or(RestoreTargetType::Latest);
    let vp = p.child("value");
    match (&t.value, kind.has_value()) {
        (None, true) => e.required(
            &vp,
            &format!("a target of type {} needs its value", kind.as_str()),
        ),
        (Some(v), false) => e.invalid_str(
            &vp,
            v,
            format!(
                "a target of type {} takes no value; for a time, LSN, transaction or restore point set type",
                kind.as_str()
            ),
        ),
        (Some(v), true) => value(&vp, kind, v, e),
        (None, false) => {}
    }
    if let Some(set) = &t.set {
        if kind != RestoreTargetType::Immediate {
            e.forbidden(
                &p.child("set"),
                format!(
                    "set picks a backup for type immediate only: with type {}, pgBackRest picks the newest backup before the target, and a chosen one could end after it",
                    kind.as_str()
                ),
            );
        } else if !is_backup_label(set) {
            e.invalid_str(
                &p.child("set"),
                set,
                "must be a pgBackRest backup label such as 20261201-101500F (status.backups lists them)",
            );
        }
    }
    if t.exclusive == Some(true) && !kind.may_exclude() {
        e.forbidden(
            &p.child("exclusive"),
            format!("applies to types time, lsn and xid, not {}", kind.as_str()),
        );
    }
}

fn value(p: &Path, kind: RestoreTargetType, v: &str, e: &mut Errors) {
    let ok = match kind {
        RestoreTargetType::Time => {
            if resolved::recovery_time(v).is_none() {
                return e.invalid_str(
                    p,
                    v,
                    "must be an RFC 3339 time with an offset, such as 2026-05-01T12:00:00Z or 2026-05-01T14:00:00+02:00: a time without one would be read in the server's time zone",
                );
            }
            true
        }
        RestoreTargetType::Lsn => v.split_once('/').is_some_and(|(hi, lo)| {
            [hi, lo]
                .iter()
                .all(|h| (1..=8).contains(&h.len()) && h.chars().all(|c| c.is_ascii_hexdigit()))
        }),
        RestoreTargetType::Xid => v.parse::<u64>().is_ok_and(|x| x >= 3),
        RestoreTargetType::Name => {
            !v.is_empty() && v.len() <= 63 && !v.chars().any(char::is_control)
        }
        RestoreTargetType::Latest | RestoreTargetType::Immediate => true,
    };
    if !ok {
        let what = match kind {
            RestoreTargetType::Lsn => "must be a WAL location such as 0/3000060",
            RestoreTargetType::Xid => "must be a transaction ID (a whole number of at least 3)",
            _ => "must be a restore point name of 1 to 63 bytes",
        };
        e.invalid_str(p, v, what);
    }
}

/// A time target needs a backup that ended before it (pgBackRest compares whole seconds):
/// refused when the inventory in the stored status lists backups of `repo` and none did.
/// Backups taken since the listing end later still, so the rule never refuses a time a
/// backup could serve; one expired since may still let a time pass, and the Job says so.
fn backup_before(
    p: &Path,
    old: &PostgresCluster,
    repo: &str,
    target: &RestoreTarget,
    e: &mut Errors,
) {
    use k8s_openapi::jiff::Timestamp;
    let (Some(RestoreTargetType::Time), Some(value)) = (target.type_, &target.value) else {
        return;
    };
    let Some(at) =
        resolved::recovery_time(value).and_then(|_| value.trim().parse::<Timestamp>().ok())
    else {
        return;
    };
    let listed = old
        .status
        .as_ref()
        .and_then(|s| s.backups.as_ref())
        .and_then(|b| b.repos.iter().find(|x| x.name == repo));
    let stops: Vec<Timestamp> = listed
        .map(|x| &x.backups)
        .into_iter()
        .flatten()
        .filter_map(|b| b.stop.as_deref()?.parse().ok())
        .collect();
    let Some(earliest) = stops.iter().min() else {
        return;
    };
    if stops.iter().all(|s| s.as_second() >= at.as_second()) {
        e.invalid_str(
            p,
            value,
            format!("no backup in {repo} ended before this time (the earliest ended at {earliest}): pgBackRest could not restore to it"),
        );
    }
}

/// `20261201-101500F`, or an incremental or differential `20261201-101500F_20261201-111500I`.
fn is_backup_label(s: &str) -> bool {
    let stamp = |t: &str| {
        t.len() == 15
            && t.char_indices()
                .all(|(i, c)| if i == 8 { c == '-' } else { c.is_ascii_digit() })
    };
    match s.split_once('_') {
        None => s.strip_suffix('F').is_some_and(stamp),
        Some((full, rest)) => {
            full.strip_suffix('F').is_some_and(stamp)
                && (rest.strip_suffix('D').or_else(|| rest.strip_suffix('I'))).is_some_and(stamp)
        }
    }
}

/// The stored options say what the target says, plus only the options a user may add.
fn options(
    p: &Path,
    stored: Option<&BTreeMap<String, String>>,
    target: &RestoreTarget,
    e: &mut Errors,
) {
    let Some(stored) = stored else { return };
    let derived = resolved::options(target);
    for (k, v) in stored {
        let kp = p.key(k);
        if OWNED_OPTIONS.contains(&k.as_str()) || k.starts_with("repo") || k.starts_with("pg") {
            e.forbidden(
                &kp,
                "pgpilot sets the stanza, the paths and the repository of a restore itself",
            );
        } else if let Some(want) = derived.get(k) {
            if v != want {
                e.invalid_str(
                    &kp,
                    v,
                    format!(
                        "must be {want:?}, as the target says; change the target, not the option"
                    ),
                );
            }
        } else if DERIVED_OPTIONS.contains(&k.as_str()) {
            e.forbidden(
                &kp,
                "does not apply to this target; remove it, or change the target",
            );
        } else if !USER_OPTIONS.contains(&k.as_str()) {
            let allowed: Vec<&str> = USER_OPTIONS.to_vec();
            e.not_supported(&kp, k, &allowed);
        } else if v.is_empty() || v.chars().any(|c| c.is_control() || c.is_whitespace()) {
            e.invalid_str(&kp, v, "must be one word");
        }
    }
    for k in derived.keys().filter(|k| !stored.contains_key(*k)) {
        e.required(&p.key(k), "derived from the target; resolved at admission");
    }
}

/// `spec.restore`: a repository of this cluster, a target as for `bootstrap.restore`, an id
/// that names one restore. Only on a cluster that exists, and not while another runs.
pub fn in_place(c: &PostgresCluster, old: Option<&PostgresCluster>, e: &mut Errors) {
    let Some(r) = &c.spec.restore else { return };
    let p = Path::new("spec").child("restore");
    let Some(old) = old else {
        return e.forbidden(
            &p,
            "a new cluster has nothing to restore in place; to start it from a backup, use spec.bootstrap.restore",
        );
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if r.id.is_empty() || r.id.len() > 63 || !r.id.chars().all(plain) {
        e.invalid_str(
            &p.child("id"),
            &r.id,
            "must be 1 to 63 letters, digits or '-_.', such as 2026-12-01-before-migration",
        );
    }
    let repos: Vec<&str> = c
        .spec
        .backup_repos()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    if !repos.contains(&r.repo.as_str()) {
        e.invalid_str(
            &p.child("repo"),
            &r.repo,
            if repos.is_empty() {
                "the cluster has no backup repository to restore from".to_owned()
            } else {
                format!("is not a repository of this cluster ({})", repos.join(", "))
            },
        );
    }
    let default = RestoreTarget::default();
    let target = r.target.as_ref().unwrap_or(&default);
    self::target(&p.child("target"), target, e);
    self::options(&p.child("options"), r.options.as_ref(), target, e);
    self::backup_before(&p.child("target").child("value"), old, &r.repo, target, e);

    let before = old.spec.restore.as_ref();
    if before.is_some_and(|b| b.id == r.id) {
        if before != Some(r) {
            e.forbidden(
                &p.child("id"),
                format!("restore {:?} was asked for with another repository or target; a different restore needs a new id", r.id),
            );
        }
        return;
    }
    // A new id: a new restore.
    let running = old
        .status
        .as_ref()
        .and_then(|s| s.restore.as_ref())
        .filter(|s| !s.finished());
    if let Some(running) = running {
        return e.forbidden(
            &p.child("id"),
            format!("restore {:?} is running ({}); ask for another once status.restore.phase is Succeeded or Failed", running.id, running.phase),
        );
    }
    let timeline = old
        .status
        .as_ref()
        .and_then(|s| s.members.iter().find_map(|m| m.timeline))
        .map_or(String::new(), |t| format!(" --target-timeline={t}"));
    e.warn(
        &p,
        format!(
            "restore {:?} replaces the data of every instance with {}'s backup: the instances stop, the first one is restored and leads on a new timeline, the others are created again from it. What the cluster holds now stays in {} (a restore with type latest{timeline} brings it back)",
            r.id, r.repo, r.repo
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_labels() {
        assert!(is_backup_label("20261201-101500F"));
        assert!(is_backup_label("20261201-101500F_20261201-111500I"));
        assert!(is_backup_label("20261201-101500F_20261202-000000D"));
        assert!(!is_backup_label("20261201-101500I"));
        assert!(!is_backup_label("latest"));
        assert!(!is_backup_label("20261201-101500F_x"));
    }
}
