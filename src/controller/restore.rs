//! A cluster created from a backup (`spec.bootstrap.restore`): its instances, roles Job and
//! backup CronJobs are held back until Job `C-restore` has restored the first instance's
//! volume (see `render::restore`). The restore runs once: once the StatefulSet exists, or
//! the Job completed, or the condition `Bootstrapped` is True, nothing here looks again,
//! and a data directory the Job did not restore is never touched by it (the script
//! refuses).

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use super::backup::ended;
use super::status::BOOTSTRAPPED;
use super::{Error, Scope, members, publish, publish_about};
use crate::api::{BootstrapRestore, PostgresCluster};
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

/// What the restore asks for, in words: `pgdata-a (repo1), type=time target=...`.
fn describe(r: &BootstrapRestore) -> String {
    let options: Vec<String> = r
        .options
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{} ({}), {}", r.cluster, r.repo, options.join(" "))
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

/// Leaves out of `rendered` what must wait for the restored instance to lead: the roles
/// Job (it needs a primary), the backup CronJobs (no backup of a cluster that has no data
/// yet), and the instances: none while the restore runs (`first` false), only the first
/// once it is restored (`first` true).
pub fn hold(rendered: &mut Rendered, name: &str, first: bool) {
    let instances = names::statefulset(name);
    rendered.stateful_sets.retain_mut(|s| {
        if s.metadata.name.as_deref() != Some(instances.as_str()) {
            return true;
        }
        if let Some(spec) = s.spec.as_mut() {
            spec.replicas = Some(1);
        }
        first
    });
    if !first {
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
    if claims
        .get_opt(&claim)
        .await
        .map_err(|e| Error::List("PersistentVolumeClaim".into(), e))?
        .is_none()
    {
        claims
            .create(&PostParams::default(), &restore.claim)
            .await
            .map_err(|e| Error::Apply(format!("PersistentVolumeClaim/{claim}"), e))?;
    }
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
