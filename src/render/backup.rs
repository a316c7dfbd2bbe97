//! pgBackRest's repository host (`C-repo-host`: StatefulSet and headless Service) and the
//! backup CronJobs `C-backup-REPO-full|diff|incr`. See `pgbackrest.rs` for why backups run
//! from a repository host rather than by exec into the primary.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::Job;
use serde_json::{Value, json};

use super::patroni::STANZA;
use super::pgbackrest::{REPO_HOST_CONF, VOLUME_ROOT, repo_files, repo_index};
use super::pod::{container_security, pod_security, secret_env, tmp_volume};
use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::api::BackupRepo;
use crate::names::{self, BackupType};

/// Volumes, mounts and credentials a repository-host process needs: the repository
/// volumes, the object-store keys, its configuration and TLS files.
pub(super) struct RepoAccess {
    pub volumes: Vec<Value>,
    pub mounts: Vec<Value>,
    pub env: Vec<Value>,
}

/// An object store's credentials, from the Secret the repository names: keys as
/// pgBackRest's environment variables, a service-account file as a volume.
pub(super) fn credentials(repo: &BackupRepo, a: &mut RepoAccess) -> Result<(), RenderError> {
    let p = format!("repo{}", repo_index(repo)?);
    let upper = p.to_uppercase();
    if let Some(s3) = &repo.s3
        && let Some(secret) = &s3.credentials_secret
    {
        a.env.push(secret_env(
            &format!("PGBACKREST_{upper}_S3_KEY"),
            secret,
            "key",
        ));
        a.env.push(secret_env(
            &format!("PGBACKREST_{upper}_S3_KEY_SECRET"),
            secret,
            "keySecret",
        ));
    }
    if let Some(secret) = repo.s3.as_ref().and_then(|s3| s3.ca_secret.as_ref()) {
        a.volumes.push(json!({ "name": format!("{p}-ca"), "secret": { "secretName": secret, "items": [{ "key": "ca.crt", "path": "ca.crt" }] } }));
        a.mounts.push(
            json!({ "name": format!("{p}-ca"), "mountPath": repo_files(&p), "readOnly": true }),
        );
    }
    if let Some(az) = &repo.azure {
        a.env.push(secret_env(
            &format!("PGBACKREST_{upper}_AZURE_KEY"),
            &az.credentials_secret,
            "key",
        ));
    }
    if let Some(secret) = repo
        .gcs
        .as_ref()
        .and_then(|g| g.credentials_secret.as_ref())
    {
        a.volumes.push(json!({ "name": format!("{p}-key"), "secret": { "secretName": secret, "items": [{ "key": "key.json", "path": "key.json" }] } }));
        a.mounts.push(
            json!({ "name": format!("{p}-key"), "mountPath": repo_files(&p), "readOnly": true }),
        );
    }
    Ok(())
}

fn repo_access(
    c: &Cluster,
    claims: impl Fn(&BackupRepo) -> Value,
) -> Result<RepoAccess, RenderError> {
    let mut a = RepoAccess {
        volumes: vec![
            json!({ "name": "pgbackrest-config", "configMap": { "name": names::pgbackrest(c.name), "items": [{ "key": REPO_HOST_CONF, "path": "pgbackrest.conf" }] } }),
            json!({ "name": "pgbackrest-tls", "secret": { "secretName": names::pgbackrest_tls_secret(c.name), "defaultMode": 0o640 } }),
            tmp_volume(),
        ],
        mounts: vec![
            json!({ "name": "pgbackrest-config", "mountPath": super::PGBACKREST_CONFIG_DIR, "readOnly": true }),
            json!({ "name": "pgbackrest-tls", "mountPath": super::PGBACKREST_TLS_DIR, "readOnly": true }),
            json!({ "name": "tmp", "mountPath": "/tmp" }),
        ],
        env: Vec::new(),
    };
    for repo in c.spec.backup_repos() {
        let p = format!("repo{}", repo_index(repo)?);
        credentials(repo, &mut a)?;
        if repo.volume.is_some() {
            a.volumes.push(claims(repo));
            a.mounts
                .push(json!({ "name": p, "mountPath": format!("{VOLUME_ROOT}/{p}") }));
        }
    }
    Ok(a)
}

/// The image of the repository host and the backup Jobs.
fn image<'a>(c: &Cluster<'a>) -> Result<&'a str, RenderError> {
    let pb = c
        .spec
        .backup
        .as_ref()
        .and_then(|b| b.pgbackrest.as_ref())
        .ok_or(RenderError::NotResolved("spec.backup.pgbackrest"))?;
    need(&pb.image, "spec.backup.pgbackrest.image").map(String::as_str)
}

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    if c.spec.backup_repos().is_empty() {
        return Ok(());
    }
    let image = image(c)?;
    let host = names::repo_host(c.name);

    // In the StatefulSet, volume repositories are claim templates; jobs use the same claims.
    let in_sts = repo_access(c, |_| Value::Null)?;
    let mut sts_volumes = in_sts.volumes;
    sts_volumes.retain(|v| !v.is_null());
    let claim_templates: Vec<Value> = c.spec.backup_repos()
        .iter()
        .filter_map(|r| {
            let v = r.volume.as_ref()?;
            let mut claim = json!({
                "metadata": { "name": r.name, "labels": c.labels(component::REPO_HOST) },
                "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": v.size } } }
            });
            if let Some(class) = &v.storage_class_name {
                claim["spec"]["storageClassName"] = json!(class);
            }
            Some(claim)
        })
        .collect();

    out.services.push(build(
        "Service",
        json!({
            "metadata": c.meta(host.clone(), component::REPO_HOST),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": c.selector(component::REPO_HOST),
                "ports": [{ "name": "pgbackrest", "port": names::PGBACKREST_PORT, "targetPort": names::PGBACKREST_PORT }]
            }
        }),
    )?);

    let resources =
        json!({ "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "memory": "512Mi" } });
    out.stateful_sets.push(build(
        "StatefulSet",
        json!({
            "metadata": c.meta(host.clone(), component::REPO_HOST),
            "spec": {
                "replicas": 1,
                "serviceName": host,
                "selector": { "matchLabels": c.selector(component::REPO_HOST) },
                "persistentVolumeClaimRetentionPolicy": { "whenDeleted": "Retain", "whenScaled": "Retain" },
                "template": {
                    "metadata": { "labels": c.labels(component::REPO_HOST) },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "securityContext": pod_security(),
                        "containers": [
                            {
                                "name": "pgbackrest",
                                "image": image,
                                "command": ["pgbackrest", "server"],
                                "env": in_sts.env,
                                "ports": [{ "name": "pgbackrest", "containerPort": names::PGBACKREST_PORT }],
                                "readinessProbe": { "tcpSocket": { "port": names::PGBACKREST_PORT }, "periodSeconds": 10 },
                                "volumeMounts": in_sts.mounts,
                                "resources": resources,
                                "securityContext": container_security()
                            },
                            {
                                // WAL can be archived only once the stanza exists, and creating
                                // it needs a running primary: retry until it does, then idle.
                                // `stanza-create` is idempotent, so a restart repeats it safely.
                                "name": "stanza",
                                "image": image,
                                "command": ["sh", "-c", format!(
                                    "until pgbackrest --stanza={STANZA} stanza-create; do echo 'waiting for the primary'; sleep 15; done; echo 'stanza {STANZA} ready'; exec sleep infinity"
                                )],
                                "env": in_sts.env,
                                "volumeMounts": in_sts.mounts,
                                "resources": { "requests": { "cpu": "10m", "memory": "32Mi" }, "limits": { "memory": "256Mi" } },
                                "securityContext": container_security()
                            }
                        ],
                        "volumes": sts_volumes
                    }
                },
                "volumeClaimTemplates": claim_templates
            }
        }),
    )?);

    let in_job = job_access(c)?;
    for repo in c.spec.backup_repos() {
        let Some(schedules) = &repo.schedules else {
            continue;
        };
        let kinds = [
            (BackupType::Full, &schedules.full),
            (BackupType::Differential, &schedules.differential),
            (BackupType::Incremental, &schedules.incremental),
        ];
        for (kind, schedule) in kinds {
            let Some(schedule) = schedule else { continue };
            out.cron_jobs
                .push(cron_job(c, &in_job, image, repo, kind, schedule)?);
        }
    }
    Ok(())
}

/// What a backup Job mounts: the repository host's access, with volume repositories as
/// the repository host's own claims.
fn job_access(c: &Cluster) -> Result<RepoAccess, RenderError> {
    let host = names::repo_host(c.name);
    repo_access(
        c,
        |r| json!({ "name": r.name, "persistentVolumeClaim": { "claimName": format!("{}-{host}-0", r.name) } }),
    )
}

/// Labels of every backup Job and CronJob: the cluster's, the repository and the type.
fn backup_labels(c: &Cluster, repo: &str, kind: BackupType) -> BTreeMap<String, String> {
    let mut labels = c.labels(component::BACKUP);
    labels.insert(names::REPO_LABEL.into(), repo.into());
    labels.insert(
        names::BACKUP_TYPE_LABEL.into(),
        kind.pgbackrest_type().into(),
    );
    labels
}

/// pgBackRest's exit code when a lock is held: another backup of the stanza runs.
const LOCK_HELD: u8 = 50;
/// Seconds a backup Job waits between attempts while another backup of the stanza runs.
const LOCK_RETRY_SECONDS: u32 = 20;

/// The Job spec shared by scheduled and on-demand backups: one container that creates the
/// stanza if needed (idempotent) and takes a backup of `kind` into `repo`. pgBackRest runs
/// one backup of a stanza at a time and refuses another with exit code 50; scheduled Jobs
/// of two types can start together, so the refused one waits and tries again instead of
/// failing. (On-demand Jobs never meet another: the controller starts one only when no
/// backup Job of the cluster runs.)
/// pgBackRest expires what the repository's retention no longer keeps after each backup.
///
/// `pg_options` are added to every pgBackRest command (see [`first_instance_only`]).
fn job_spec(
    c: &Cluster,
    access: &RepoAccess,
    image: &str,
    repo: &BackupRepo,
    kind: BackupType,
    labels: &BTreeMap<String, String>,
    pg_options: &str,
) -> Result<Value, RenderError> {
    let n = repo_index(repo)?;
    // Volume repositories are ReadWriteOnce: the job must run on the repository host's node.
    let affinity = json!({ "podAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": { "matchLabels": c.selector(component::REPO_HOST) },
        "topologyKey": "kubernetes.io/hostname"
    }]}});
    let command = format!(
        "while :; do\n\
         \x20 pgbackrest --stanza={STANZA}{pg_options} stanza-create \
         && pgbackrest --stanza={STANZA}{pg_options} --repo={n} --type={t} backup && exit 0\n\
         \x20 rc=$?; [ $rc -eq {LOCK_HELD} ] || exit $rc\n\
         \x20 echo 'another backup of stanza {STANZA} runs; trying again in {LOCK_RETRY_SECONDS} s'\n\
         \x20 sleep {LOCK_RETRY_SECONDS}\n\
         done\n",
        t = kind.pgbackrest_type()
    );
    Ok(json!({
        "backoffLimit": 2,
        "template": {
            "metadata": { "labels": labels },
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "enableServiceLinks": false,
                "securityContext": pod_security(),
                "affinity": affinity,
                "containers": [{
                    "name": "backup",
                    "image": image,
                    "command": ["sh", "-c", command],
                    "env": access.env,
                    "volumeMounts": access.mounts,
                    "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "memory": "1Gi" } },
                    "securityContext": container_security()
                }],
                "volumes": access.volumes
            }
        }
    }))
}

fn cron_job(
    c: &Cluster,
    access: &RepoAccess,
    image: &str,
    repo: &BackupRepo,
    kind: BackupType,
    schedule: &str,
) -> Result<k8s_openapi::api::batch::v1::CronJob, RenderError> {
    let name = names::backup_cronjob(c.name, &repo.name, kind);
    let labels = backup_labels(c, &repo.name, kind);
    build(
        "CronJob",
        json!({
            "metadata": { "name": name, "namespace": c.namespace, "labels": labels, "ownerReferences": c.owner.clone().map(|o| vec![o]) },
            "spec": {
                "schedule": schedule,
                // A backup still running when the next one is due is not doubled up.
                "concurrencyPolicy": "Forbid",
                "startingDeadlineSeconds": 600,
                "successfulJobsHistoryLimit": 3,
                "failedJobsHistoryLimit": 3,
                "jobTemplate": {
                    "metadata": { "labels": labels },
                    "spec": job_spec(c, access, image, repo, kind, &labels, "")?
                }
            }
        }),
    )
}

/// The Job of an on-demand backup asked for with `pgpilot.io/backup` = `value`: the
/// scheduled backups' Job, named and labelled after the request. `None` when the value
/// does not name a repository of the spec (admission refuses such values).
pub fn request_job(c: &Cluster, value: &str) -> Result<Option<Job>, RenderError> {
    request_job_with(c, value, "")
}

fn request_job_with(
    c: &Cluster,
    value: &str,
    pg_options: &str,
) -> Result<Option<Job>, RenderError> {
    let Some((repo_name, kind)) = names::backup_request(value) else {
        return Ok(None);
    };
    let Some(repo) = c.spec.backup_repos().iter().find(|r| r.name == repo_name) else {
        return Ok(None);
    };
    let image = image(c)?;
    let mut labels = backup_labels(c, repo_name, kind);
    labels.insert(
        names::BACKUP_REQUEST_LABEL.into(),
        names::backup_request_hash(value),
    );
    let access = job_access(c)?;
    build(
        "Job",
        json!({
            "metadata": {
                "name": names::backup_request_job(c.name, value),
                "namespace": c.namespace,
                "labels": labels,
                "annotations": { names::BACKUP_REQUEST_LABEL: value.trim() },
                "ownerReferences": c.owner.clone().map(|o| vec![o])
            },
            "spec": job_spec(c, &access, image, repo, kind, &labels, pg_options)?
        }),
    )
    .map(Some)
}

/// The full backup that follows an in-place restore (`spec.restore`): the restored timeline
/// gets a backup of its own before the other instances are created again (pgBackRest's
/// newest backup would otherwise be one of the replaced data). The on-demand backup's Job,
/// named after the restore and labelled as the restore's, so neither the backup requests
/// nor the rendered Jobs count it as theirs.
pub fn restore_backup_job(c: &Cluster) -> Result<Option<Job>, RenderError> {
    let Some(r) = &c.spec.restore else {
        return Ok(None);
    };
    let value = format!("{}:{}", r.repo, BackupType::Full.pgbackrest_type());
    let instances = *need(&c.spec.instances, "spec.instances")?;
    let Some(mut job) = request_job_with(c, &value, &first_instance_only(instances))? else {
        return Ok(None);
    };
    job.metadata.name = Some(names::in_place_backup_job(c.name, &r.id));
    job.metadata.annotations = None;
    let labels = job.metadata.labels.get_or_insert_default();
    labels.remove(names::BACKUP_REQUEST_LABEL);
    labels.insert(names::RESTORE_LABEL.into(), c.name.into());
    Ok(Some(job))
}

/// pgBackRest options that leave instances 2 to `instances` out of a backup (`--reset-`
/// drops a setting of the configuration file): the backup after an in-place restore runs
/// while the restored first instance is the only one, and pgBackRest would otherwise wait
/// its `io-timeout` (60 s) on each missing host, in each command.
fn first_instance_only(instances: i32) -> String {
    const SETTINGS: [&str; 9] = [
        "host",
        "host-type",
        "host-ca-file",
        "host-cert-file",
        "host-key-file",
        "path",
        "port",
        "socket-path",
        "user",
    ];
    (2..=instances)
        .flat_map(|n| SETTINGS.map(|o| format!(" --reset-pg{n}-{o}")))
        .collect()
}
