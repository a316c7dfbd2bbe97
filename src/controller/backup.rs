//! Backups a user can ask for and see. `pgpilot.io/backup: REPO:TYPE[@word]` asks for one
//! backup, taken by a Job of the scheduled backups' template named after the request: the
//! Job's existence is the record that the request was acted on, so an operator that stops
//! between creating it and writing the status finds it instead of taking a second backup.
//! pgBackRest runs one backup of a stanza at a time, so a request waits (`Pending`) while
//! any backup Job of the cluster, scheduled or on demand, runs.
//!
//! `LastBackupSucceeded` reports the newest finished backup Job of either kind;
//! `ContinuousArchiving` (see `archiving`) is observed here too, with the metrics both feed.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PropagationPolicy};
use kube::runtime::events::EventType;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

use super::status::{CONTINUOUS_ARCHIVING, Observation};
use super::{Error, Scope, archiving, inventory, publish, publish_about};
use crate::api::{LastBackup, PostgresCluster};
use crate::metrics::BackupMetrics;
use crate::names;
use crate::patroni::member::Member;
use crate::render;

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// The backup part of a pass over a cluster with repositories: `ContinuousArchiving` and
/// `LastBackupSucceeded` (a Warning Event when either turns False), the metrics, and the
/// request in `pgpilot.io/backup` acted on when the controller acts (`acting`: children
/// applied, not paused).
pub async fn observe(
    scope: &Scope<'_>,
    cluster: &PostgresCluster,
    pods: &[Pod],
    members: &[Member],
    acting: bool,
    o: &mut Observation,
) -> Result<(), Error> {
    let Scope {
        ctx,
        obj,
        namespace,
        name,
        ..
    } = *scope;
    if cluster.spec.backup_repos().is_empty() {
        ctx.metrics.set_backups(namespace, name, None);
        return Ok(());
    }
    let stored = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let primary = o.primary.as_deref();
    let archive = archiving::condition(pods, primary);
    let was_failing = stored
        .iter()
        .any(|c| c.type_ == CONTINUOUS_ARCHIVING && c.status == "False");
    if archive.0 == "False" && !was_failing {
        let note = archive.2.clone();
        publish(ctx, obj, EventType::Warning, "ArchivingFailed", note).await;
    }
    let jobs = jobs(scope).await?;
    let outcome = last_backup_succeeded(&jobs);
    if let Some((note, job)) = failure_to_announce(&outcome, stored, &jobs) {
        publish_about(ctx, obj, EventType::Warning, "BackupFailed", note, job).await;
    }
    let newest = newest_successes(&jobs);
    let last_backup = newest
        .values()
        .max()
        .and_then(|s| Timestamp::from_second(*s).ok());
    let figures = BackupMetrics {
        newest,
        archive_failures: archiving::failures(pods, primary),
    };
    ctx.metrics.set_backups(namespace, name, Some(figures));
    o.archiving = Some(archive);
    o.backups = Some(outcome);
    o.inventory = inventory::inventory(pods, primary, ctx.config.backup.inventory_limit);
    if !acting {
        return Ok(());
    }
    let listed = inventory::listed_at(o.inventory.as_ref());
    if inventory::stale(listed, last_backup, Timestamp::now()) {
        ask_for_listing(scope, members, primary, last_backup).await;
    }
    if let Some((value, last)) = requested(cluster) {
        o.backup = Some(step(scope, cluster, &jobs, &value, last.as_ref()).await?);
    }
    let current = cluster.annotations().get(names::BACKUP_ANNOTATION);
    prune(scope, &jobs, current.map(String::as_str)).await
}

/// Asks the primary's Patroni for a reload, whose callback lists the inventory: at once
/// after a new backup, else at most once a minute per cluster (a listing that does not
/// arrive is asked for again). A failure is logged: the next pass asks again.
async fn ask_for_listing(
    scope: &Scope<'_>,
    members: &[Member],
    primary: Option<&str>,
    last_backup: Option<Timestamp>,
) {
    let Scope {
        ctx,
        namespace,
        name,
        ..
    } = *scope;
    let at = primary.and_then(|p| members.iter().find(|m| m.name == p)?.api.clone());
    let Some(at) = at else { return };
    let newest = last_backup.map(|t| t.as_second());
    if !ctx.may_ask_listing(&format!("{namespace}/{name}"), newest, LISTING_EVERY) {
        return;
    }
    let asked = match super::converge::writer(scope).await {
        Ok(client) => client.reload(&at).await.map_err(|e| e.to_string()),
        Err((_, why)) => Err(why),
    };
    if let Err(e) = asked {
        tracing::warn!(cluster = %format!("{namespace}/{name}"), "asking the primary to list the backups: {e}");
    }
}

/// The shortest time between two requests for a listing of one cluster's backups.
const LISTING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// The request in `pgpilot.io/backup` when it is not done yet: the value, and the record
/// of it if one was written.
pub fn requested(cluster: &PostgresCluster) -> Option<(String, Option<LastBackup>)> {
    let value = cluster
        .annotations()
        .get(names::BACKUP_ANNOTATION)?
        .trim()
        .to_owned();
    if value.is_empty() {
        return None;
    }
    let last = cluster
        .status
        .as_ref()
        .and_then(|s| s.last_backup.as_ref())
        .filter(|l| l.request == value);
    match last {
        Some(l) if l.phase == SUCCEEDED || l.phase == FAILED => None,
        last => Some((value, last.cloned())),
    }
}

/// The cluster's backup Jobs: those its CronJobs made and those requests made.
pub async fn jobs(scope: &Scope<'_>) -> Result<Vec<Job>, Error> {
    let api: Api<Job> = Api::namespaced(scope.ctx.client.clone(), scope.namespace);
    let selector = format!(
        "{}={},app.kubernetes.io/component={}",
        names::CLUSTER_LABEL,
        scope.name,
        render::component::BACKUP
    );
    api.list(&ListParams::default().labels(&selector))
        .await
        .map(|l| l.items)
        .map_err(|e| Error::List("backup Jobs".into(), e))
}

/// How a finished Job ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ended {
    pub succeeded: bool,
    pub at: Option<Timestamp>,
    pub reason: String,
    pub message: String,
}

/// `Some` once the Job controller has marked the Job `Complete` or `Failed`.
pub fn ended(job: &Job) -> Option<Ended> {
    let status = job.status.as_ref()?;
    status.conditions.iter().flatten().find_map(|c| {
        let succeeded = match c.type_.as_str() {
            "Complete" => true,
            "Failed" => false,
            _ => return None,
        };
        (c.status == "True").then(|| Ended {
            succeeded,
            at: status
                .completion_time
                .as_ref()
                .or(c.last_transition_time.as_ref())
                .map(|t| t.0),
            reason: c.reason.clone().unwrap_or_default(),
            message: c.message.clone().unwrap_or_default(),
        })
    })
}

fn running(job: &Job) -> bool {
    ended(job).is_none() && job.metadata.deletion_timestamp.is_none()
}

/// `REPO TYPE` of a backup Job, from its labels.
fn what(job: &Job) -> String {
    let labels = job.labels();
    let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("?");
    format!(
        "{} {}",
        get(names::REPO_LABEL),
        get(names::BACKUP_TYPE_LABEL)
    )
}

fn outcome(job: &Job, e: &Ended) -> String {
    let name = job.name_any();
    let at = e.at.map(|t| format!(" at {t}")).unwrap_or_default();
    if e.succeeded {
        format!("backup Job {name} ({}) completed{at}", what(job))
    } else {
        format!(
            "backup Job {name} ({}) failed{at}: {}{}; see kubectl logs job/{name}",
            what(job),
            e.reason,
            if e.message.is_empty() {
                String::new()
            } else {
                format!(" ({})", e.message)
            }
        )
    }
}

/// `LastBackupSucceeded` from the newest finished backup Job: `True`, `False` with the
/// Job's reason, or `Unknown` before any has finished. Its message names the Job, so a
/// new failure is a new message (see [`failure_to_announce`]).
pub fn last_backup_succeeded(jobs: &[Job]) -> (&'static str, String, String) {
    let newest = jobs
        .iter()
        .filter_map(|j| ended(j).map(|e| (j, e)))
        .max_by_key(|(j, e)| (e.at, j.name_any()));
    match newest {
        None => (
            "Unknown",
            "NoBackupYet".into(),
            "no backup Job has finished yet".into(),
        ),
        Some((job, e)) if e.succeeded => ("True", "Succeeded".into(), outcome(job, &e)),
        Some((job, e)) => (
            "False",
            if e.reason.is_empty() {
                "JobFailed".into()
            } else {
                e.reason.clone()
            },
            outcome(job, &e),
        ),
    }
}

/// The message of a `LastBackupSucceeded` that turned False with this pass, for a Warning
/// Event about the failed Job, given the stored conditions: each failed Job is announced
/// once.
pub fn failure_to_announce(
    now: &(&'static str, String, String),
    stored: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    jobs: &[Job],
) -> Option<(String, Option<ObjectReference>)> {
    let (status, _, message) = now;
    let before = stored
        .iter()
        .find(|c| c.type_ == super::status::LAST_BACKUP_SUCCEEDED);
    let new =
        *status == "False" && before.is_none_or(|b| b.status != "False" || &b.message != message);
    new.then(|| {
        // The message names the Job ("backup Job NAME (...").
        let job = jobs
            .iter()
            .find(|j| message.contains(&format!("Job {} ", j.name_any())));
        (message.clone(), job.map(reference))
    })
}

fn reference(job: &Job) -> ObjectReference {
    job.object_ref(&())
}

/// Per (repository, type), when the newest successful backup Job completed (Unix seconds).
pub fn newest_successes(jobs: &[Job]) -> std::collections::BTreeMap<(String, String), i64> {
    let mut out = std::collections::BTreeMap::new();
    for job in jobs {
        let Some(Ended {
            succeeded: true,
            at: Some(at),
            ..
        }) = ended(job)
        else {
            continue;
        };
        let labels = job.labels();
        let (Some(repo), Some(kind)) = (
            labels.get(names::REPO_LABEL),
            labels.get(names::BACKUP_TYPE_LABEL),
        ) else {
            continue;
        };
        let newest = out.entry((repo.clone(), kind.clone())).or_insert(i64::MIN);
        *newest = (*newest).max(at.as_second());
    }
    out
}

fn entry(value: &str, job: &str, phase: &str, message: String) -> LastBackup {
    LastBackup {
        request: value.to_owned(),
        job: job.to_owned(),
        phase: phase.to_owned(),
        start_time: None,
        completion_time: None,
        message: Some(message),
    }
}

/// Acts on the request `value` once: the record to store after this pass.
pub async fn step(
    scope: &Scope<'_>,
    cluster: &PostgresCluster,
    jobs: &[Job],
    value: &str,
    last: Option<&LastBackup>,
) -> Result<LastBackup, Error> {
    let Scope { ctx, obj, .. } = *scope;
    let name = names::backup_request_job(scope.name, value);
    if let Some(job) = jobs.iter().find(|j| j.name_any() == name) {
        let start = job.creation_timestamp().map(|t| t.0.to_string());
        let Some(e) = ended(job) else {
            let mut r = entry(
                value,
                &name,
                RUNNING,
                format!("Job {name} takes a {} backup", what(job)),
            );
            r.start_time = start;
            return Ok(r);
        };
        let message = outcome(job, &e);
        let phase = if e.succeeded {
            // A failure is announced with `LastBackupSucceeded` turning False.
            publish_about(
                ctx,
                obj,
                EventType::Normal,
                "BackupSucceeded",
                format!("{value}: {message}"),
                Some(reference(job)),
            )
            .await;
            SUCCEEDED
        } else {
            FAILED
        };
        let mut r = entry(value, &name, phase, message);
        r.start_time = start;
        r.completion_time = e.at.map(|t| t.to_string());
        return Ok(r);
    }
    if last.is_some_and(|l| l.phase == RUNNING) {
        // Recorded as running, so it was created: someone deleted it. Another Job would
        // be a second backup for one request.
        let message = format!(
            "Job {name} was deleted before it finished; set {} to a new value to ask again",
            names::BACKUP_ANNOTATION
        );
        publish(
            ctx,
            obj,
            EventType::Warning,
            "BackupFailed",
            format!("{value}: {message}"),
        )
        .await;
        return Ok(entry(value, &name, FAILED, message));
    }
    if let Some(busy) = jobs.iter().find(|j| running(j)) {
        return Ok(entry(
            value,
            &name,
            PENDING,
            format!(
                "waiting for backup Job {} ({}) to finish: pgBackRest runs one backup of a cluster at a time",
                busy.name_any(),
                what(busy)
            ),
        ));
    }
    let job = render::backup_request_job(cluster, value)
        .map_err(|e| Error::Generate(format!("Job/{name}"), e.to_string()))?
        .ok_or_else(|| {
            Error::Generate(
                format!("Job/{name}"),
                format!("{value} names no repository of the spec"),
            )
        })?;
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), scope.namespace);
    // Made already by a pass whose status write was lost: the next pass reads it.
    super::apply::create_once(&api, &job).await?;
    publish_about(
        ctx,
        obj,
        EventType::Normal,
        "BackupStarted",
        format!("{value}: Job {name} created"),
        Some(reference(&job)),
    )
    .await;
    let mut r = entry(
        value,
        &name,
        RUNNING,
        format!("Job {name} takes a {}", what(&job)),
    );
    r.start_time = Some(Timestamp::now().to_string());
    Ok(r)
}

/// Deletes the finished Jobs of earlier requests (the current request's stays, with its
/// logs), saying how each ended first: a request replaced while its Job ran is reported
/// nowhere else.
pub async fn prune(scope: &Scope<'_>, jobs: &[Job], current: Option<&str>) -> Result<(), Error> {
    let Scope { ctx, obj, .. } = *scope;
    let current = current.map(|v| names::backup_request_job(scope.name, v));
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), scope.namespace);
    for job in jobs {
        let name = job.name_any();
        let request = job.annotations().get(names::BACKUP_REQUEST_LABEL);
        let Some(e) = ended(job) else { continue };
        if request.is_none()
            || current.as_deref() == Some(name.as_str())
            || job.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(Error::Delete(format!("Job/{name}"), e)),
        }
        let (type_, reason) = if e.succeeded {
            (EventType::Normal, "BackupSucceeded")
        } else {
            (EventType::Warning, "BackupFailed")
        };
        let note = format!(
            "{}: {} (Job deleted: a newer request replaced it)",
            request.map(String::as_str).unwrap_or_default(),
            outcome(job, &e)
        );
        publish_about(ctx, obj, type_, reason, note, Some(reference(job))).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PostgresClusterStatus;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn job(name: &str, kind: &str, ended: Option<(&str, &str, i64)>) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some(name.into());
        j.metadata.labels = Some(BTreeMap::from([
            (names::REPO_LABEL.into(), "repo1".into()),
            (names::BACKUP_TYPE_LABEL.into(), kind.into()),
        ]));
        if let Some((type_, reason, second)) = ended {
            let at = Time(Timestamp::from_second(second).unwrap());
            j.status = Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some("Job has reached the specified backoff limit".into()),
                    last_transition_time: Some(at),
                    ..Default::default()
                }]),
                ..Default::default()
            });
        }
        j
    }

    #[test]
    fn a_request_is_open_until_its_outcome_is_recorded() {
        let mut c = PostgresCluster::new("pg", Default::default());
        assert_eq!(requested(&c), None);
        c.annotations_mut()
            .insert(names::BACKUP_ANNOTATION.into(), " repo1:full ".into());
        assert_eq!(requested(&c), Some(("repo1:full".into(), None)));
        for (phase, open) in [
            (PENDING, true),
            (RUNNING, true),
            (SUCCEEDED, false),
            (FAILED, false),
        ] {
            let r = entry("repo1:full", "pg-backup-x", phase, String::new());
            c.status = Some(PostgresClusterStatus {
                last_backup: Some(r.clone()),
                ..Default::default()
            });
            assert_eq!(requested(&c).is_some(), open, "{phase}");
            if open {
                assert_eq!(requested(&c).unwrap().1, Some(r));
            }
        }
        // A new word is a new request, whatever became of the last.
        c.annotations_mut()
            .insert(names::BACKUP_ANNOTATION.into(), "repo1:full@2".into());
        assert_eq!(requested(&c), Some(("repo1:full@2".into(), None)));
    }

    #[test]
    fn the_newest_finished_job_decides_last_backup_succeeded() {
        assert_eq!(last_backup_succeeded(&[]).0, "Unknown");
        // A running Job decides nothing.
        let running = job("pg-backup-repo1-incr-3", "incr", None);
        assert_eq!(
            last_backup_succeeded(std::slice::from_ref(&running)).0,
            "Unknown"
        );
        let ok = job(
            "pg-backup-repo1-full-1",
            "full",
            Some(("Complete", "", 100)),
        );
        let failed = job(
            "pg-backup-0123456789",
            "incr",
            Some(("Failed", "BackoffLimitExceeded", 200)),
        );
        let (status, reason, message) =
            last_backup_succeeded(&[ok.clone(), failed.clone(), running]);
        assert_eq!((status, reason.as_str()), ("False", "BackoffLimitExceeded"));
        assert!(
            message.starts_with("backup Job pg-backup-0123456789 (repo1 incr) failed at ")
                && message.contains("backoff limit")
                && message.ends_with("see kubectl logs job/pg-backup-0123456789"),
            "{message}"
        );
        // The next success flips it back.
        let later = job(
            "pg-backup-repo1-full-2",
            "full",
            Some(("Complete", "", 300)),
        );
        let (status, reason, message) = last_backup_succeeded(&[ok, failed, later]);
        assert_eq!((status, reason.as_str()), ("True", "Succeeded"));
        assert!(
            message.starts_with("backup Job pg-backup-repo1-full-2 (repo1 full) completed at "),
            "{message}"
        );
    }

    #[test]
    fn each_failed_job_is_announced_once() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        let failed = job("a", "full", Some(("Failed", "DeadlineExceeded", 10)));
        let now = last_backup_succeeded(&[failed]);
        let stored = |status: &str, message: &str| Condition {
            type_: super::super::status::LAST_BACKUP_SUCCEEDED.into(),
            status: status.into(),
            message: message.into(),
            reason: String::new(),
            last_transition_time: Time(Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        let jobs = [job("a", "full", None)];
        let (note, related) = failure_to_announce(&now, &[], &jobs).unwrap();
        assert_eq!(note, now.2);
        assert_eq!(related.and_then(|r| r.name).as_deref(), Some("a"));
        assert!(failure_to_announce(&now, &[stored("True", "x")], &jobs).is_some());
        let other = stored("False", "another Job failed");
        assert!(failure_to_announce(&now, &[other], &jobs).is_some());
        assert_eq!(
            failure_to_announce(&now, &[stored("False", &now.2)], &jobs),
            None
        );
        let ok = last_backup_succeeded(&[job("b", "full", Some(("Complete", "", 20)))]);
        assert_eq!(
            failure_to_announce(&ok, &[stored("False", &now.2)], &jobs),
            None
        );
    }

    #[test]
    fn the_newest_success_per_repository_and_type() {
        let jobs = [
            job("a", "full", Some(("Complete", "", 100))),
            job("b", "full", Some(("Complete", "", 300))),
            job("c", "full", Some(("Failed", "BackoffLimitExceeded", 400))),
            job("d", "incr", Some(("Complete", "", 200))),
            job("e", "incr", None),
        ];
        let newest = newest_successes(&jobs);
        assert_eq!(
            newest.into_iter().collect::<Vec<_>>(),
            [
                (("repo1".to_owned(), "full".to_owned()), 300),
                (("repo1".to_owned(), "incr".to_owned()), 200)
            ]
        );
    }

    #[test]
    fn only_complete_or_failed_conditions_end_a_job() {
        // Kubernetes sets FailureTarget / SuccessCriteriaMet before the final condition,
        // while pods may still run: not ended yet.
        let mut j = job(
            "x",
            "full",
            Some(("FailureTarget", "BackoffLimitExceeded", 5)),
        );
        assert_eq!(ended(&j), None);
        assert!(running(&j));
        j.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        assert_eq!(ended(&j), None);
        let done = job("y", "full", Some(("Complete", "", 5)));
        assert!(ended(&done).unwrap().succeeded);
        assert!(!running(&done));
    }
}
