//! Operations asked for with annotations on the cluster, checked before they are stored:
//! `pgpilot.io/switchover` (a member, or `any`), `pgpilot.io/backup` (`REPO:TYPE` of a
//! repository of the spec) and `pgpilot.io/restart` (any new value).
//! Any other `pgpilot.io/` key is a typo that would otherwise be silently ignored, so it
//! is refused. `spec.paused` is warned about: while it holds, edits are stored and not
//! applied.

use super::field::{Errors, Path};
use crate::api::{PostgresCluster, SynchronousMode};
use crate::names;
use crate::patroni::member::SYNC_STANDBY_ROLE;

/// Annotation values are copied into pod templates and events: keep them short and plain.
const MAX_VALUE: usize = 63;

pub fn check(new: &PostgresCluster, old: Option<&PostgresCluster>, e: &mut Errors) {
    let annotations = Path::new("metadata").child("annotations");
    let old_value = |key: &str| {
        old.and_then(|o| o.metadata.annotations.as_ref())
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    for (key, value) in new.metadata.annotations.iter().flatten() {
        if !key.starts_with("pgpilot.io/") {
            continue;
        }
        let path = annotations.key(key);
        if !names::OPERATION_ANNOTATIONS.contains(&key.as_str()) {
            e.not_supported(&path, key, &names::OPERATION_ANNOTATIONS);
            continue;
        }
        let plain = |c: char| c.is_ascii_alphanumeric() || "-_.:@+".contains(c);
        if value.is_empty() || value.len() > MAX_VALUE || !value.chars().all(plain) {
            e.invalid_str(
                &path,
                value,
                format!(
                    "must be 1 to {MAX_VALUE} letters, digits or '-_.:@+' (a timestamp such as 2026-11-30T14.00 will do)"
                ),
            );
            continue;
        }
        // Only a new value asks for something; an unchanged one was dealt with already.
        if old_value(key) == Some(value.as_str()) {
            continue;
        }
        match key.as_str() {
            names::SWITCHOVER_ANNOTATION => switchover(new, old, &path, value, e),
            names::BACKUP_ANNOTATION => backup(new, old, &path, value, e),
            _ => {}
        }
    }
    if new.spec.paused == Some(true) && old.is_none_or(|o| o.spec.paused != Some(true)) {
        e.warn(
            &Path::new("spec").child("paused"),
            "pgpilot changes nothing for this cluster until paused is false: edits are stored, not applied",
        );
    }
}

/// `REPO:TYPE` or `REPO:TYPE@WORD`: a repository of the spec, a pgBackRest backup type, on
/// a cluster whose primary runs (the stanza is created from it).
fn backup(
    new: &PostgresCluster,
    old: Option<&PostgresCluster>,
    path: &Path,
    value: &str,
    e: &mut Errors,
) {
    let repos: Vec<&str> = new
        .spec
        .backup_repos()
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let Some((repo, _)) = names::backup_request(value) else {
        return e.invalid_str(
            path,
            value,
            "must be REPO:TYPE with TYPE full, diff or incr, optionally followed by @ and a word (for example repo1:full@2026-11-30)",
        );
    };
    if repos.is_empty() {
        return e.invalid_str(
            path,
            value,
            "the cluster has no backup repository (spec.backup.pgbackrest.repos)",
        );
    }
    if !repos.contains(&repo) {
        return e.invalid_str(
            path,
            value,
            format!(
                "{repo} is not a repository of this cluster ({})",
                repos.join(", ")
            ),
        );
    }
    let running = old
        .and_then(|o| o.status.as_ref())
        .is_some_and(|s| s.primary.is_some());
    if !running {
        e.invalid_str(
            path,
            value,
            "a backup needs a running cluster with an elected primary",
        );
    }
}

/// `TARGET` or `TARGET@WORD`: `any`, or a replica that streams now (as the status reports).
fn switchover(
    new: &PostgresCluster,
    old: Option<&PostgresCluster>,
    path: &Path,
    value: &str,
    e: &mut Errors,
) {
    let target = names::switchover_target(value);
    let name = new.metadata.name.as_deref().unwrap_or_default();
    let status = old.and_then(|o| o.status.as_ref());
    let Some(status) = status.filter(|s| s.primary.is_some()) else {
        return e.invalid_str(
            path,
            value,
            "a switchover needs a running cluster with an elected primary",
        );
    };
    if target == names::SWITCHOVER_ANY {
        return;
    }
    let prefix = format!("{name}-");
    let ordinal = target
        .strip_prefix(&prefix)
        .and_then(|o| o.parse::<i32>().ok());
    if ordinal.is_none_or(|o| o < 0 || o >= new.spec.instances.unwrap_or(0)) {
        return e.invalid_str(
            path,
            value,
            format!("must be \"any\" or a member of this cluster ({prefix}0 to {prefix}{}), optionally followed by @ and a word", new.spec.instances.unwrap_or(1) - 1),
        );
    }
    if status.primary.as_deref() == Some(target) {
        return e.invalid_str(path, value, format!("{target} is the primary already"));
    }
    let member = status.members.iter().find(|m| m.name == target);
    let running = member.is_some_and(|m| m.state.as_deref() == Some("running"));
    if !running {
        return e.invalid_str(
            path,
            value,
            format!("{target} is not a running replica (see status.members)"),
        );
    }
    let synchronous = matches!(
        new.spec.patroni.as_ref().and_then(|p| p.synchronous_mode),
        Some(SynchronousMode::Sync | SynchronousMode::Strict)
    );
    let role = member.and_then(|m| m.role.as_deref());
    if synchronous && role != Some(SYNC_STANDBY_ROLE) {
        let sync: Vec<&str> = status
            .members
            .iter()
            .filter(|m| m.role.as_deref() == Some(SYNC_STANDBY_ROLE))
            .map(|m| m.name.as_str())
            .collect();
        e.invalid_str(
            path,
            value,
            format!(
                "{target} is not the synchronous standby ({}): in a synchronous mode Patroni hands over only to it; use \"any\"",
                if sync.is_empty() { "none named yet".into() } else { sync.join(", ") }
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BackupRepo, BackupSpec, ClusterMember, PatroniSpec, PgBackRestSpec, PostgresClusterSpec,
        PostgresClusterStatus,
    };

    fn cluster(annotations: &[(&str, &str)], sync: bool) -> PostgresCluster {
        let mut c = PostgresCluster::new(
            "pg",
            PostgresClusterSpec {
                instances: Some(3),
                patroni: Some(PatroniSpec {
                    synchronous_mode: Some(if sync {
                        SynchronousMode::Sync
                    } else {
                        SynchronousMode::Async
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        c.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let member = |name: &str, role: &str| ClusterMember {
            name: name.into(),
            role: Some(role.into()),
            state: Some("running".into()),
            ..Default::default()
        };
        c.status = Some(PostgresClusterStatus {
            primary: Some("pg-0".into()),
            members: vec![
                member("pg-0", "primary"),
                member("pg-1", "sync_standby"),
                member("pg-2", "replica"),
            ],
            ..Default::default()
        });
        c
    }

    fn errors(new: &PostgresCluster, old: Option<&PostgresCluster>) -> Vec<String> {
        let mut e = Errors::default();
        check(new, old, &mut e);
        e.errors.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_path() {
        let old = cluster(&[], false);
        let new = cluster(
            &[
                ("pgpilot.io/switchovr", "any"),
                ("pgpilot.io/restart", "a b"),
            ],
            false,
        );
        let errs = errors(&new, Some(&old));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e
                    .starts_with("metadata.annotations[pgpilot.io/switchovr]: Unsupported value")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("metadata.annotations[pgpilot.io/restart]: Invalid value")),
            "{errs:?}"
        );
        // Other owners' keys are theirs.
        assert!(errors(&cluster(&[("example.com/x", "a b")], false), Some(&old)).is_empty());
    }

    #[test]
    fn switchover_targets_are_checked_against_the_status() {
        let ok = |v: &str, sync: bool| {
            errors(
                &cluster(&[(names::SWITCHOVER_ANNOTATION, v)], sync),
                Some(&cluster(&[], sync)),
            )
        };
        assert!(ok("any", true).is_empty());
        assert!(ok("any@2", true).is_empty());
        assert!(ok("pg-1", true).is_empty());
        assert!(ok("pg-2", false).is_empty());
        let refused = |v: &str, sync: bool| ok(v, sync).join("; ");
        assert!(refused("pg-0", true).contains("pg-0 is the primary already"));
        assert!(refused("pg-2", true).contains("not the synchronous standby (pg-1)"));
        assert!(refused("pg-7", false).contains("must be \"any\" or a member"));
        assert!(refused("other-1", false).contains("must be \"any\" or a member"));
        // A value already stored was dealt with; re-applying it asks nothing.
        let done = cluster(&[(names::SWITCHOVER_ANNOTATION, "pg-0")], true);
        assert!(errors(&done, Some(&done)).is_empty());
        // No running cluster yet.
        let new = cluster(&[(names::SWITCHOVER_ANNOTATION, "any")], true);
        assert!(
            errors(&new, None)
                .join("")
                .contains("needs a running cluster")
        );
    }

    #[test]
    fn backup_requests_name_a_repository_of_the_spec_and_a_type() {
        let with_repos = |annotations: &[(&str, &str)]| {
            let mut c = cluster(annotations, false);
            c.spec.backup = Some(BackupSpec {
                pgbackrest: Some(PgBackRestSpec {
                    repos: Some(vec![BackupRepo {
                        name: "repo1".into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            });
            c
        };
        let ask = |v: &str| {
            errors(
                &with_repos(&[(names::BACKUP_ANNOTATION, v)]),
                Some(&with_repos(&[])),
            )
            .join("; ")
        };
        assert_eq!(ask("repo1:full"), "");
        assert_eq!(ask("repo1:incr@before-upgrade"), "");
        assert!(
            ask("repo2:full").contains("repo2 is not a repository of this cluster (repo1)"),
            "{}",
            ask("repo2:full")
        );
        for bad in ["full", "repo1:differential", "repo1"] {
            assert!(
                ask(bad).contains("must be REPO:TYPE"),
                "{bad}: {}",
                ask(bad)
            );
        }
        assert!(ask("repo1:full").is_empty() && ask("repo1:full:x").contains("must be REPO:TYPE"));
        // Without repositories, or before the primary runs.
        let none = cluster(&[(names::BACKUP_ANNOTATION, "repo1:full")], false);
        assert!(
            errors(&none, Some(&cluster(&[], false)))
                .join("")
                .contains("has no backup repository")
        );
        let new = with_repos(&[(names::BACKUP_ANNOTATION, "repo1:full")]);
        assert!(
            errors(&new, None)
                .join("")
                .contains("a backup needs a running cluster")
        );
        // Re-applying a stored value asks nothing, even once the status moved on.
        assert!(errors(&new, Some(&new)).is_empty());
    }

    #[test]
    fn pausing_warns_once() {
        let mut new = cluster(&[], false);
        new.spec.paused = Some(true);
        let mut e = Errors::default();
        check(&new, Some(&cluster(&[], false)), &mut e);
        assert_eq!(e.warnings.len(), 1);
        let mut e = Errors::default();
        check(&new, Some(&new), &mut e);
        assert!(e.warnings.is_empty());
    }
}
