//! A cluster created from a backup (`spec.bootstrap.restore`): Job `C-restore`, its
//! ConfigMap `C-restore`, and the first instance's volume claim, which the Job fills before
//! the StatefulSet exists (the StatefulSet adopts a claim of its template's name).
//!
//! The source repository is reached the way the source's own instances reach it: a volume
//! repository through the source's repository host, over TLS with the source's pgBackRest
//! certificate (issued by the source's own CA, which its repository host trusts); an object
//! store directly, under the source's path, with the credentials its spec names. The Job
//! has no configuration of this cluster's repositories, and PostgreSQL recovers in it with
//! archiving off, so nothing is written to the source's repository.
//!
//! Not part of [`super::render`]: the controller renders these only while the cluster waits
//! for its first instance, given the source repository it read (from the source cluster's
//! spec, or as `repository` describes it).

use std::fmt::Write;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use serde_json::{Value, json};

use super::backup::{RepoAccess, credentials};
use super::patroni::STANZA;
use super::pgbackrest::{repo_index, storage};
use super::pod::{container_security, pod_security, scheduling, secret_env, tmp_volume};
use super::{Cluster, RenderError, build, component, need};
use std::collections::BTreeMap;

use crate::api::BackupRepo;
use crate::names;

pub const CONFIG: &str = "pgbackrest.conf";
pub const SCRIPT: &str = "restore.sh";
pub const SQL: &str = "restore.sql";
pub const DYNAMIC: &str = "patroni.dynamic.json";

/// The repository a restore reads: repository `repo` of cluster `cluster`.
pub struct Source<'a> {
    pub cluster: &'a str,
    pub repo: &'a BackupRepo,
}

/// The children of a restore, in the order they are needed.
pub struct Restore {
    pub config_map: ConfigMap,
    pub claim: PersistentVolumeClaim,
    pub job: Job,
}

/// Which restore: of a new cluster's first instance (its volume is empty), or of a
/// running cluster in place (the first instance's volume is restored with `--delta`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bootstrap,
    InPlace,
}

/// The Job's name and the resolved options of the restore `mode` asks for.
fn request<'a>(
    c: &Cluster<'a>,
    mode: Mode,
) -> Result<(String, &'a BTreeMap<String, String>), RenderError> {
    match mode {
        Mode::Bootstrap => {
            let r = c
                .spec
                .bootstrap
                .as_ref()
                .and_then(|b| b.restore.as_ref())
                .ok_or(RenderError::NotResolved("spec.bootstrap.restore"))?;
            let options = need(&r.options, "spec.bootstrap.restore.options")?;
            Ok((names::restore_job(c.name), options))
        }
        Mode::InPlace => {
            let r = need(&c.spec.restore, "spec.restore")?;
            let options = need(&r.options, "spec.restore.options")?;
            Ok((names::in_place_restore_job(c.name, &r.id), options))
        }
    }
}

/// `pgbackrest.conf` of the Job: the source repository only.
fn config(c: &Cluster, source: &Source) -> Result<String, RenderError> {
    let major = *need(&c.spec.postgres_version, "spec.postgresVersion")?;
    let n = repo_index(source.repo)?;
    let mut s = String::from(
        "[global]\nlog-level-console=info\nlog-level-file=off\nlock-path=/tmp/pgbackrest\n",
    );
    if source.repo.volume.is_some() {
        let host = names::repo_host(source.cluster);
        let dir = super::PGBACKREST_TLS_DIR;
        let _ = writeln!(
            s,
            "repo{n}-host={host}-0.{}\nrepo{n}-host-type=tls\nrepo{n}-host-ca-file={dir}/ca.crt\nrepo{n}-host-cert-file={dir}/tls.crt\nrepo{n}-host-key-file={dir}/tls.key",
            c.service_host(&host)
        );
    } else {
        storage(&mut s, c.namespace, source.cluster, source.repo)?;
    }
    let _ = write!(
        s,
        "\n[{STANZA}]\npg1-path={}\npg1-socket-path=/tmp\npg1-user={}\n",
        super::data_dir(major),
        names::SUPERUSER
    );
    Ok(s)
}

/// What the Job runs once PostgreSQL has promoted: this cluster's passwords for the roles
/// Patroni and the operator log in with (the restored ones are the source's), sent as SCRAM
/// verifiers, and no recovery settings left behind in `postgresql.auto.conf`.
fn sql() -> String {
    let mut s = String::from("\\set ON_ERROR_STOP on\n");
    s.push_str(super::roles::QUIET_SESSION);
    s.push_str("ALTER SYSTEM RESET ALL;\nSELECT pg_reload_conf();\n");
    super::roles::set_password(&mut s, names::SUPERUSER, "", "PGPILOT_SUPERUSER_PASSWORD");
    super::roles::set_password(
        &mut s,
        names::REPLICATION_USER,
        "LOGIN REPLICATION",
        "PGPILOT_REPLICATION_PASSWORD",
    );
    s.push_str("CHECKPOINT;\n");
    s
}

/// The arguments of `restore.sh`: data directory, binaries, major, then pgBackRest's
/// options (the repository, and those resolved from the target, in order).
fn args(
    c: &Cluster,
    source: &Source,
    mode: Mode,
    options: &BTreeMap<String, String>,
) -> Result<Vec<String>, RenderError> {
    let major = *need(&c.spec.postgres_version, "spec.postgresVersion")?;
    let mut out = vec![
        "sh".into(),
        format!("{}/{SCRIPT}", super::PGBACKREST_CONFIG_DIR),
        match mode {
            Mode::Bootstrap => "bootstrap".into(),
            Mode::InPlace => "in-place".into(),
        },
        super::data_dir(major),
        super::bin_dir(major),
        major.to_string(),
        format!("--repo={}", repo_index(source.repo)?),
    ];
    for (k, v) in options {
        if v.chars().any(char::is_control) {
            return Err(RenderError::Build {
                what: "the restore Job".into(),
                reason: format!("spec.bootstrap.restore.options.{k} holds a control character"),
            });
        }
        // pgBackRest's booleans: `--name` for y; n is their default, and pgBackRest
        // refuses `--no-name` for one it does not negate (`target-exclusive`).
        match v.as_str() {
            "y" => out.push(format!("--{k}")),
            "n" => {}
            _ => out.push(format!("--{k}={v}")),
        }
    }
    Ok(out)
}

pub fn render(
    c: &Cluster,
    source: &Source,
    mode: Mode,
    dynamic_config: &Value,
) -> Result<Restore, RenderError> {
    let (name, options) = request(c, mode)?;
    let image = need(&c.spec.image, "spec.image")?;
    let mut meta = c.meta(name.clone(), component::RESTORE);
    meta.labels
        .get_or_insert_default()
        .insert(names::RESTORE_LABEL.into(), c.name.into());

    let config_map = build(
        "ConfigMap",
        json!({
            "metadata": meta,
            "data": {
                CONFIG: config(c, source)?,
                SCRIPT: include_str!("scripts/restore.sh"),
                SQL: sql(),
                DYNAMIC: dynamic_config.to_string()
            }
        }),
    )?;

    let storage = &c.spec.storage;
    let mut claim = json!({
        "metadata": {
            "name": names::first_data_claim(c.name),
            "namespace": c.namespace,
            "labels": c.labels(component::DATABASE)
        },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": storage.size } } }
    });
    if let Some(class) = &storage.storage_class_name {
        claim["spec"]["storageClassName"] = json!(class);
    }
    let claim = build("PersistentVolumeClaim", claim)?;

    let mut access = RepoAccess {
        volumes: vec![
            json!({ "name": "pgdata", "persistentVolumeClaim": { "claimName": names::first_data_claim(c.name) } }),
            json!({ "name": "restore", "configMap": { "name": name } }),
            tmp_volume(),
            json!({ "name": "shm", "emptyDir": { "medium": "Memory" } }),
        ],
        mounts: vec![
            json!({ "name": "pgdata", "mountPath": super::PGDATA_MOUNT }),
            json!({ "name": "restore", "mountPath": super::PGBACKREST_CONFIG_DIR, "readOnly": true }),
            json!({ "name": "tmp", "mountPath": "/tmp" }),
            json!({ "name": "shm", "mountPath": "/dev/shm" }),
        ],
        env: vec![
            super::roles::scram_env(),
            secret_env(
                "PGPILOT_SUPERUSER_PASSWORD",
                &names::superuser_secret(c.name),
                "password",
            ),
            secret_env(
                "PGPILOT_REPLICATION_PASSWORD",
                &names::replication_secret(c.name),
                "password",
            ),
        ],
    };
    if source.repo.volume.is_some() {
        access.volumes.push(json!({ "name": "source-tls", "secret": { "secretName": names::pgbackrest_tls_secret(source.cluster), "defaultMode": 0o640 } }));
        access.mounts.push(json!({ "name": "source-tls", "mountPath": super::PGBACKREST_TLS_DIR, "readOnly": true }));
    } else {
        credentials(source.repo, &mut access)?;
    }

    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": pod_security(),
        "containers": [{
            "name": "restore",
            "image": image,
            "command": args(c, source, mode, options)?,
            "env": access.env,
            "volumeMounts": access.mounts,
            "resources": need(&c.spec.resources, "spec.resources")?,
            "securityContext": container_security()
        }],
        "volumes": access.volumes
    });
    // Where the first instance may run: the claim is bound where the Job runs.
    scheduling(c, &mut pod_spec)?;
    let job = build(
        "Job",
        json!({
            "metadata": meta,
            "spec": {
                // A restore interrupted by a lost pod or node starts again from nothing;
                // one that fails on its own (a target the archive cannot reach) fails again.
                "backoffLimit": 2,
                "template": { "metadata": { "labels": c.labels(component::RESTORE) }, "spec": pod_spec }
            }
        }),
    )?;
    Ok(Restore {
        config_map,
        claim,
        job,
    })
}
