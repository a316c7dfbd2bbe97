//! Restores, as the controller carries them out.
//!
//! A cluster created from a backup (`spec.bootstrap.restore`): its instances, roles Job and
//! backup CronJobs are held back until Job `C-restore` has restored the first instance's
//! volume (see `render::restore`), then the first instance starts alone until it leads. The
//! restore runs once: once the StatefulSet exists, or the Job completed, or the condition
//! `Bootstrapped` is True, nothing here looks again, and a data directory the Job did not
//! restore is never touched by it (the script refuses).
//!
//! A running cluster restored in place (`spec.restore`, once per id): the instances stop,
//! Patroni's DCS state is reset, Job `C-restore-HASH` restores the first volume, that
//! instance starts alone, a full backup of the restored timeline is taken, and the others
//! start and are re-created from the leader. The Jobs named after the id are the record that
//! the restore started; `status.restore` says where it stands.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::apply::create_once;
use super::backup::ended;
use super::status::BOOTSTRAPPED;
use super::{Error, Scope, members, publish, publish_about};
use crate::api::{BootstrapRestore, PostgresCluster, RestoreStatus};
use crate::names;
use crate::render::{self, Rendered, Restore, RestoreSource};

/// `Bootstrapped` as (status, reason, message).
pub type Condition = (&'static str, String, String);

/// Where a cluster stands with its first data.
pub enum Bootstrap {
    /// No restore asked for: Patroni runs `initdb`.
    Initdb,
    /// Restored, and the first instance has led: nothing is held back.
    Restored(Condition),
    /// Restored; the first instance starts under Patroni and the others wait until it
    /// leads: an instance with an empty volume would otherwise race it for Patroni's
    /// initialize key and bootstrap a new, empty cluster.
    Starting(Condition),
    /// The instances wait: for the restore's children, or for what keeps it from starting.
    Waiting(Result<Box<Restore>, Condition>),
}

fn request(cluster: &PostgresCluster) -> Option<&BootstrapRestore> {
    cluster.spec.bootstrap.as_ref()?.restore.as_ref()
}

/// What the restore asks for, in words: `src (repo1), target=... type=time`.
fn describe(r: &BootstrapRestore) -> String {
    format!(
        "{} ({}), {}",
        r.cluster,
        r.repo,
        options_text(r.options.as_ref())
    )
}

/// A restore's resolved options as `key=value` words.
fn options_text(options: Option<&std::collections::BTreeMap<String, String>>) -> String {
    let words: Vec<String> = options
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    words.join(" ")
}

/// Decides, before the children are applied, whether the instances wait for a restore.
pub async fn stage(scope: &Scope<'_>, cluster: &PostgresCluster) -> Result<Bootstrap, Error> {
    let Some(r) = request(cluster) else {
        return Ok(Bootstrap::Initdb);
    };
    let Scope {
        ctx,
        obj,
        namespace,
        name,
        ..
    } = *scope;
    let stored = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == BOOTSTRAPPED));
    if let Some(c) = stored.filter(|c| c.status == "True") {
        return Ok(Bootstrap::Restored((
            "True",
            c.reason.clone(),
            c.message.clone(),
        )));
    }
    let job_name = names::restore_job(name);
    let restored = (
        "True",
        "Restored".to_owned(),
        format!(
            "Job {job_name} restored the first instance from {}",
            describe(r)
        ),
    );
    let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let instances = sts
        .get_opt(&names::statefulset(name))
        .await
        .map_err(|e| Error::List("StatefulSet".into(), e))?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let done = instances.is_some()
        || jobs
            .get_opt(&job_name)
            .await
            .map_err(|e| Error::List("Job".into(), e))?
            .as_ref()
            .and_then(ended)
            .is_some_and(|e| e.succeeded);
    if done {
        let pods = members::pods(&ctx.client, namespace, name).await?;
        if members::labelled_primary(&pods).is_none() {
            return Ok(Bootstrap::Starting((
                "False",
                "Starting".into(),
                format!(
                    "Job {job_name} restored the first instance; it starts under Patroni, and the other instances follow once it leads"
                ),
            )));
        }
        publish(ctx, obj, EventType::Normal, "Restored", restored.2.clone()).await;
        return Ok(Bootstrap::Restored(restored));
    }

    // The source repository: as described, or as the source cluster's spec has it.
    let inline;
    let source_spec;
    let repo = if let Some(described) = &r.repository {
        inline = described.as_repo(&r.repo);
        &inline
    } else {
        let clusters: Api<PostgresCluster> = Api::namespaced(ctx.client.clone(), namespace);
        let waiting = |reason: &str, message: String| {
            Ok(Bootstrap::Waiting(Err((
                "False",
                reason.to_owned(),
                message,
            ))))
        };
        source_spec = match clusters.get_opt(&r.cluster).await {
            Ok(Some(c)) => c.spec,
            Ok(None) => {
                return waiting(
                    "SourceNotFound",
                    format!(
                        "cluster {:?} does not exist in namespace {namespace}: the restore waits for it (or describe its object-store repository in spec.bootstrap.restore.repository)",
                        r.cluster
                    ),
                );
            }
            Err(e) => return Err(Error::List("PostgresCluster".into(), e)),
        };
        if source_spec.postgres_version != cluster.spec.postgres_version {
            return waiting(
                "VersionMismatch",
                format!(
                    "cluster {:?} runs PostgreSQL {}, this one {}: a backup restores into the same major version",
                    r.cluster,
                    source_spec.postgres_version.unwrap_or_default(),
                    cluster.spec.postgres_version.unwrap_or_default()
                ),
            );
        }
        match source_spec.backup_repos().iter().find(|x| x.name == r.repo) {
            Some(repo) => repo,
            None => {
                let known: Vec<&str> = source_spec
                    .backup_repos()
                    .iter()
                    .map(|x| x.name.as_str())
                    .collect();
                return waiting(
                    "UnknownRepository",
                    format!(
                        "cluster {:?} has no repository {} (it has: {})",
                        r.cluster,
                        r.repo,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
    };
    let source = RestoreSource {
        cluster: &r.cluster,
        repo,
    };
    Ok(Bootstrap::Waiting(
        render::restore(cluster, &source)
            .map(Box::new)
            .map_err(|e| ("False", "RenderFailed".to_owned(), e.to_string())),
    ))
}

/// Leaves out of `rendered` what must wait for a restored instance to lead: the roles Job
/// (it needs a primary), the backup CronJobs (no backup of data being replaced), and the
/// instances: no StatefulSet at all before a new cluster's first volume is restored
/// (`None`), else `Some(n)` instances.
pub fn hold(rendered: &mut Rendered, name: &str, instances: Option<i32>) {
    let statefulset = names::statefulset(name);
    rendered.stateful_sets.retain_mut(|s| {
        if s.metadata.name.as_deref() != Some(statefulset.as_str()) {
            return true;
        }
        if let Some(spec) = s.spec.as_mut() {
            spec.replicas = instances;
        }
        instances.is_some()
    });
    if instances.is_none() {
        rendered.pod_disruption_budgets.clear();
    }
    rendered.cron_jobs.clear();
    rendered.jobs.clear();
}

/// Makes the first instance's claim and the restore Job when missing, and says how the
/// restore goes.
pub async fn carry_out(scope: &Scope<'_>, restore: &Restore) -> Result<Condition, Error> {
    let Scope {
        ctx,
        obj,
        namespace,
        ..
    } = *scope;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let claim = restore.claim.name_any();
    create_once(&claims, &restore.claim).await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job_name = restore.job.name_any();
    let job = match jobs
        .get_opt(&job_name)
        .await
        .map_err(|e| Error::List("Job".into(), e))?
    {
        Some(job) => job,
        None => {
            let job = jobs
                .create(&PostParams::default(), &restore.job)
                .await
                .map_err(|e| Error::Apply(format!("Job/{job_name}"), e))?;
            publish(
                ctx,
                obj,
                EventType::Normal,
                "Restoring",
                format!("Job {job_name} restores the first instance"),
            )
            .await;
            job
        }
    };
    Ok(match ended(&job) {
        Some(e) if !e.succeeded => {
            let message = format!(
                "Job {job_name} failed ({}: {}); its pods' logs say why. Delete the Job to try again; the volume {claim} is left as it is",
                e.reason, e.message
            );
            publish_about(
                ctx,
                obj,
                EventType::Warning,
                "RestoreFailed",
                message.clone(),
                Some(job.object_ref(&())),
            )
            .await;
            ("False", "RestoreFailed".into(), message)
        }
        _ => (
            "False",
            "Restoring".into(),
            format!(
                "Job {job_name} restores the first instance; the instances start when it completes"
            ),
        ),
    })
}

pub const STOPPING: &str = "Stopping";
pub const RESTORING: &str = "Restoring";
pub const STARTING: &str = "Starting";
pub const BACKING_UP: &str = "BackingUp";
pub const RECREATING: &str = "Recreating";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// An in-place restore (`spec.restore`) as this pass finds it.
pub struct InPlace {
    /// The record, as it stands before this pass acts.
    pub record: RestoreStatus,
    /// How many instances may run: none while they stop and the volume is restored (and
    /// after a failed restore), one while the restored instance starts; `None`: all.
    pub instances: Option<i32>,
    /// The Job and its ConfigMap, while they may still be needed.
    pub restore: Option<Box<Restore>>,
    /// The full backup that follows, while it is to be made.
    pub backup: Option<Job>,
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Decides, before the children are applied, where the restore stands: from the restore
/// Job named after the id (the record that it started) and the pods.
pub async fn in_place(
    scope: &Scope<'_>,
    cluster: &PostgresCluster,
) -> Result<Option<InPlace>, Error> {
    let Scope {
        ctx,
        namespace,
        name,
        ..
    } = *scope;
    let stored = cluster.status.as_ref().and_then(|s| s.restore.clone());
    let Some(r) = &cluster.spec.restore else {
        // After a failed restore the instances stay stopped until one succeeds: the first
        // volume is half restored, the others hold the data of before.
        return Ok(stored.filter(|s| s.phase == FAILED).map(|record| InPlace {
            record,
            instances: Some(0),
            restore: None,
            backup: None,
        }));
    };
    let mut record = match stored.filter(|s| s.id == r.id) {
        Some(s) if s.finished() => {
            let instances = (s.phase == FAILED).then_some(0);
            return Ok(Some(InPlace {
                record: s,
                instances,
                restore: None,
                backup: None,
            }));
        }
        Some(s) => s,
        None => RestoreStatus {
            id: r.id.clone(),
            phase: STOPPING.into(),
            target: Some(format!("{} {}", r.repo, options_text(r.options.as_ref()))),
            start_time: Some(now()),
            ..Default::default()
        },
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job_name = names::in_place_restore_job(name, &r.id);
    let job = jobs
        .get_opt(&job_name)
        .await
        .map_err(|e| Error::List("Job".into(), e))?;
    let mut backup = None;
    let (instances, restore) = match (&job, job.as_ref().and_then(ended)) {
        (_, Some(e)) if !e.succeeded => {
            record.phase = FAILED.into();
            record.completion_time = Some(now());
            record.message = Some(format!(
                "Job {job_name} failed ({}: {}); its pods' logs say why. The instances stay stopped until a restore succeeds: the other instances' volumes and the repository hold the data of before (a restore with type latest and the former timeline brings it back)",
                e.reason, e.message
            ));
            (Some(0), None)
        }
        (_, Some(_)) => {
            let pods = members::pods(&ctx.client, namespace, name).await?;
            if members::labelled_primary(&pods).is_none() {
                record.phase = STARTING.into();
                record.message = Some(
                    "the restored instance starts under Patroni; the others follow once it leads and is backed up"
                        .into(),
                );
                (Some(1), None)
            } else if record.phase == RECREATING {
                (None, None)
            } else {
                // A backup of the restored timeline first: replicas are created from the
                // newest backup, which must not be one of the replaced data.
                let backup_name = names::in_place_backup_job(name, &r.id);
                let found = jobs
                    .get_opt(&backup_name)
                    .await
                    .map_err(|e| Error::List("Job".into(), e))?;
                match found.as_ref().and_then(ended) {
                    Some(e) if e.succeeded => {
                        record.phase = RECREATING.into();
                        record.message = Some(format!(
                            "the restored instance leads and Job {backup_name} backed it up; the others are created again from it"
                        ));
                        (None, None)
                    }
                    Some(e) => {
                        record.phase = BACKING_UP.into();
                        record.message = Some(format!(
                            "Job {backup_name}, the backup of the restored timeline, failed ({}: {}); the other instances wait for it. Delete the Job to try again",
                            e.reason, e.message
                        ));
                        (Some(1), None)
                    }
                    None => {
                        record.phase = BACKING_UP.into();
                        record.message = Some(format!(
                            "Job {backup_name} backs up the restored timeline; the other instances wait for it"
                        ));
                        if found.is_none() {
                            backup = render::restore_backup_job(cluster)
                                .map_err(|e| Error::Generate(backup_name.clone(), e.to_string()))?;
                        }
                        (Some(1), None)
                    }
                }
            }
        }
        (Some(_), None) => {
            record.phase = RESTORING.into();
            record.message = Some(format!(
                "Job {job_name} restores the first instance's volume"
            ));
            (Some(0), Some(render::in_place_restore(cluster)))
        }
        (None, None) => {
            record.phase = STOPPING.into();
            record.message = Some("the instances stop".into());
            (Some(0), Some(render::in_place_restore(cluster)))
        }
    };
    let restore = match restore {
        Some(Ok(r)) => Some(Box::new(r)),
        Some(Err(e)) => {
            record.phase = FAILED.into();
            record.message = Some(format!("the restore Job cannot be rendered: {e}"));
            None
        }
        None => None,
    };
    Ok(Some(InPlace {
        record,
        instances,
        restore,
        backup,
    }))
}

/// Patroni's state in the DCS (leader, configuration with the initialize key and the last
/// known position, synchronous standbys, failover): reset, so that the restored instance,
/// far behind any position recorded before, takes the leader key as a new cluster's first
/// member does. Only ever called with every instance stopped.
async fn reset_patroni(scope: &Scope<'_>) -> Result<(), Error> {
    use k8s_openapi::api::core::v1::Endpoints;
    let Scope {
        ctx,
        namespace,
        name,
        ..
    } = *scope;
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), namespace);
    for object in [
        name.to_owned(),
        format!("{name}-config"),
        names::patroni_sync(name),
        format!("{name}-failover"),
    ] {
        match api.delete(&object, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Delete(format!("Endpoints/{object}"), e)),
        }
    }
    Ok(())
}

/// Carries the restore one step further; returns the record as this pass leaves it.
pub async fn carry_out_in_place(
    scope: &Scope<'_>,
    step: InPlace,
    stored: Option<&RestoreStatus>,
    pods: &[k8s_openapi::api::core::v1::Pod],
    patroni_members: &[crate::patroni::member::Member],
    desired: i32,
) -> Result<RestoreStatus, Error> {
    let Scope {
        ctx,
        obj,
        namespace,
        name,
        ..
    } = *scope;
    let mut record = step.record;
    match record.phase.as_str() {
        STOPPING if pods.is_empty() => {
            let Some(restore) = &step.restore else {
                return Ok(record);
            };
            reset_patroni(scope).await?;
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
            let job_name = restore.job.name_any();
            create_once(&jobs, &restore.job).await?;
            publish(
                ctx,
                obj,
                EventType::Normal,
                "Restoring",
                format!("restore {}: the instances stopped; Job {job_name} restores the first instance's volume", record.id),
            )
            .await;
            record.phase = RESTORING.into();
            record.message = Some(format!(
                "Job {job_name} restores the first instance's volume"
            ));
        }
        BACKING_UP => {
            if let Some(job) = &step.backup {
                let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
                create_once(&jobs, job).await?;
            }
        }
        FAILED if stored.is_none_or(|s| s.id != record.id || s.phase != FAILED) => {
            let message = record.message.clone().unwrap_or_default();
            publish(
                ctx,
                obj,
                EventType::Warning,
                "RestoreFailed",
                format!("restore {}: {message}", record.id),
            )
            .await;
        }
        RECREATING => {
            let Some(leader) = crate::patroni::member::leader(patroni_members) else {
                return Ok(record);
            };
            let timeline = leader.status.as_ref().and_then(|s| s.timeline);
            let writer = match super::converge::writer(scope).await {
                Ok(w) => w,
                Err((_, message)) => {
                    record.message = Some(message);
                    return Ok(record);
                }
            };
            let mut waiting = Vec::new();
            for m in patroni_members.iter().filter(|m| m.name != leader.name) {
                let key = format!("{namespace}/{name}/{}/{}", record.id, m.name);
                if !ctx.reinitialize_once(key.clone()) {
                    let asked = match &m.api {
                        Some(at) => writer.reinitialize(at).await,
                        None => {
                            ctx.forget_reinitialize(&key);
                            waiting.push(format!("{} has no address yet", m.name));
                            continue;
                        }
                    };
                    if let Err(e) = asked {
                        ctx.forget_reinitialize(&key);
                        waiting.push(format!("{}: {e}", m.name));
                    } else {
                        waiting.push(format!("{} is being created again", m.name));
                    }
                    continue;
                }
                let follows = m
                    .status
                    .as_ref()
                    .is_some_and(|s| s.is_running() && s.timeline == timeline && s.is_streaming());
                if !follows {
                    waiting.push(format!("{} is not streaming yet", m.name));
                }
            }
            if patroni_members.len() < usize::try_from(desired).unwrap_or(0) {
                waiting.push(format!(
                    "{} of {desired} instances exist",
                    patroni_members.len()
                ));
            }
            if waiting.is_empty() {
                record.phase = SUCCEEDED.into();
                record.completion_time = Some(now());
                record.timeline = timeline;
                let reached = reached_lsn(&writer, leader, timeline).await;
                record.message = Some(match &reached {
                    Ok(lsn) => format!(
                        "every instance runs the restored data, on timeline {} from LSN {lsn}",
                        timeline.unwrap_or_default()
                    ),
                    Err(why) => format!(
                        "every instance runs the restored data, on timeline {}; where recovery stopped is not known: {why}",
                        timeline.unwrap_or_default()
                    ),
                });
                record.reached_lsn = reached.ok();
                publish(
                    ctx,
                    obj,
                    EventType::Normal,
                    "Restored",
                    format!(
                        "restore {}: {}",
                        record.id,
                        record.message.clone().unwrap_or_default()
                    ),
                )
                .await;
            } else {
                record.message = Some(format!(
                    "the restored instance {} leads; {}",
                    leader.name,
                    waiting.join("; ")
                ));
            }
        }
        _ => {}
    }
    Ok(record)
}

/// Where recovery stopped: the LSN at which `timeline` began, from the restored leader's
/// timeline history (Patroni's `/history`).
async fn reached_lsn(
    patroni: &crate::patroni::Client,
    leader: &crate::patroni::member::Member,
    timeline: Option<i64>,
) -> Result<String, String> {
    let (Some(at), Some(timeline)) = (&leader.api, timeline) else {
        return Err(format!("{} reports no address or timeline", leader.name));
    };
    let history = patroni.history(at).await.map_err(|e| e.to_string())?;
    crate::patroni::switch_into(&history, timeline)
        .ok_or_else(|| format!("Patroni's history lists no switch into timeline {timeline}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> (Rendered, String) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/manifests/samples/ha-backup-pooler.yaml"
        ))
        .unwrap();
        let mut c = crate::manifest::from_yaml_stream(&text).unwrap().remove(0);
        c.spec = crate::resolve::resolve(&c.spec, None, &crate::config::Config::default());
        c.metadata.namespace = Some("db".into());
        let name = c.metadata.name.clone().unwrap();
        (render::render(&c).unwrap(), name)
    }

    #[test]
    fn holding_keeps_the_repository_host_and_sets_the_instances() {
        let (mut r, name) = rendered();
        assert_eq!(r.stateful_sets.len(), 2);
        hold(&mut r, &name, None);
        let names: Vec<_> = r
            .stateful_sets
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        assert_eq!(
            names,
            [names::repo_host(&name)],
            "no instances before the restore"
        );
        assert!(r.jobs.is_empty() && r.cron_jobs.is_empty() && r.pod_disruption_budgets.is_empty());

        let (mut r, name) = rendered();
        hold(&mut r, &name, Some(1));
        let instances = r
            .stateful_sets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(names::statefulset(&name).as_str()))
            .unwrap();
        assert_eq!(instances.spec.as_ref().unwrap().replicas, Some(1));
        assert!(r.jobs.is_empty() && r.cron_jobs.is_empty());
    }
}
