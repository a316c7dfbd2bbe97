//! ConfigMap `C-pgbackrest`: two `pgbackrest.conf` files, stanza `db`.
//!
//! Why a repository host. Backups run where the repository is, and a volume repository is a
//! ReadWriteOnce claim that cannot be mounted by every instance. So one small pod,
//! `C-repo-host-0`, owns the repository volumes and object-store credentials and runs
//! pgBackRest's TLS server. Instances archive WAL to it over mutual TLS; backup CronJob pods
//! are scheduled onto its node, mount the same volumes and talk to the instances' TLS
//! servers (pgBackRest picks the current primary itself). No pod needs `pods/exec`, and
//! object-store keys never reach the database pods.
//!
//! - `instance.conf`, in the PostgreSQL pods: the local data directory, every repository
//!   reached through the repository host, and the TLS server the backups connect to.
//! - `repo-host.conf`, in the repository host and backup jobs: the repositories themselves,
//!   and every instance as `pgN-host`.

use std::fmt::Write;

use serde_json::json;

use super::patroni::STANZA;
use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::api::BackupRepo;
use crate::names;

pub const INSTANCE_CONF: &str = "instance.conf";
/// PostgreSQL's `archive_command` on the instances: pgBackRest's `archive-push`, whose
/// failures (and the recovery after them) are reported on the pod for the operator's
/// `ContinuousArchiving` condition.
pub const ARCHIVE_PUSH: &str = "archive-push.sh";
/// Reports from inside the instances, written on their own pod (`scripts/report.py`): the
/// archive's outcome (from `archive-push.sh`) and the backup inventory (a Patroni callback).
pub const REPORT: &str = "report.py";
/// The pod annotation the archive report writes (JSON: `ok`, `wal`, `time`, and on failure
/// `exitCode`, `failures`, `since`).
pub const ARCHIVE_ANNOTATION: &str = "pgpilot.io/archive";
/// The pod annotation the primary's inventory report writes (JSON: `time`, and `repos`
/// as pgBackRest lists them, or `error`).
pub const INVENTORY_ANNOTATION: &str = "pgpilot.io/backups";

/// The Patroni callback (`on_reload`, `on_role_change`) that reports the inventory; Patroni
/// appends the action, the member's role and the scope.
pub fn inventory_callback() -> String {
    format!(
        "python3 {}/{REPORT} inventory",
        super::PGBACKREST_CONFIG_DIR
    )
}

/// `archive_command`, with the scripts mounted at `/etc/pgbackrest`.
pub fn archive_command() -> String {
    format!(
        "sh {}/{ARCHIVE_PUSH} \"%p\" %f",
        super::PGBACKREST_CONFIG_DIR
    )
}
pub const REPO_HOST_CONF: &str = "repo-host.conf";
/// Where the repository host mounts volume repositories: `/pgbackrest/repoN`.
pub const VOLUME_ROOT: &str = "/pgbackrest";

/// `repo1` → 1.
pub fn repo_index(repo: &BackupRepo) -> Result<u8, RenderError> {
    repo.name
        .strip_prefix("repo")
        .and_then(|n| n.parse().ok())
        .filter(|n| (1..=4).contains(n))
        .ok_or(RenderError::NotResolved(
            "a valid spec.backup.pgbackrest.repos[].name",
        ))
}

/// DNS name of instance `ordinal`, through the headless Service.
pub fn instance_host(c: &Cluster, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}.{}",
        names::statefulset(c.name),
        c.service_host(&names::pods_service(c.name))
    )
}

pub fn repo_host_address(c: &Cluster) -> String {
    let host = names::repo_host(c.name);
    format!("{host}-0.{}", c.service_host(&host))
}

fn tls_files(prefix: &str) -> String {
    let dir = super::PGBACKREST_TLS_DIR;
    format!(
        "{prefix}-ca-file={dir}/ca.crt\n{prefix}-cert-file={dir}/tls.crt\n{prefix}-key-file={dir}/tls.key\n"
    )
}

/// Settings both files share: logging to the console only (the root filesystem is
/// read-only), locks in /tmp, and the TLS server that accepts the cluster's own certificate.
fn common() -> String {
    let mut s = String::new();
    s.push_str("log-level-console=info\nlog-level-file=off\nlock-path=/tmp/pgbackrest\n");
    s.push_str("tls-server-address=*\n");
    let _ = writeln!(s, "tls-server-port={}", names::PGBACKREST_PORT);
    s.push_str(&tls_files("tls-server"));
    let _ = writeln!(
        s,
        "tls-server-auth={}={STANZA}",
        names::PGBACKREST_CLIENT_CN
    );
    s
}

fn pg_settings(prefix: &str, major: i32) -> String {
    format!(
        "{prefix}-path={}\n{prefix}-port={}\n{prefix}-socket-path={}\n{prefix}-user={}\n",
        super::data_dir(major),
        names::POSTGRES_PORT,
        super::SOCKET_DIR,
        names::SUPERUSER
    )
}

pub fn instance_conf(c: &Cluster) -> Result<String, RenderError> {
    let major = *need(&c.spec.postgres_version, "spec.postgresVersion")?;
    let mut s = String::from("[global]\n");
    s.push_str(&common());
    for repo in c.spec.backup_repos() {
        let n = repo_index(repo)?;
        let _ = writeln!(
            s,
            "repo{n}-host={}\nrepo{n}-host-type=tls",
            repo_host_address(c)
        );
        s.push_str(&tls_files(&format!("repo{n}-host")));
    }
    let _ = write!(s, "\n[{STANZA}]\n{}", pg_settings("pg1", major));
    Ok(s)
}

/// A value from the spec as it may go into an ini file: refused when it holds a control
/// character, which would end its line and inject the next (validation rejects such
/// values; this stands for a spec that reached the controller without it).
fn ini_value<'a>(field: &str, value: &'a str) -> Result<&'a str, RenderError> {
    if value.chars().any(char::is_control) {
        return Err(RenderError::Build {
            what: "pgbackrest.conf".into(),
            reason: format!("spec.backup.pgbackrest.repos[].{field} holds a control character"),
        });
    }
    Ok(value)
}

/// Where the files a repository's object store needs are mounted (`repoN` → its GCS key
/// `key.json`, or its S3 endpoint's `ca.crt`), in the pods that reach the store.
pub fn repo_files(repo: &str) -> String {
    format!("{}/{repo}", super::PGBACKREST_CONFIG_DIR)
}

/// Where repository `repo` of cluster `cluster` keeps its data, as the process holding it
/// (the repository host, or a restore reading a source cluster's repository) is told: an
/// object store under a path naming the namespace and cluster (object stores are shared),
/// or a volume at its mount point.
pub fn storage(
    s: &mut String,
    namespace: &str,
    cluster: &str,
    repo: &BackupRepo,
) -> Result<(), RenderError> {
    let p = format!("repo{}", repo_index(repo)?);
    let object_path = format!("/pgbackrest/{namespace}/{cluster}/{p}");
    if let Some(s3) = &repo.s3 {
        let _ = writeln!(
            s,
            "{p}-type=s3\n{p}-path={object_path}\n{p}-s3-bucket={}\n{p}-s3-endpoint={}\n{p}-s3-region={}",
            ini_value("s3.bucket", &s3.bucket)?,
            ini_value("s3.endpoint", &s3.endpoint)?,
            ini_value("s3.region", &s3.region)?
        );
        let uri_style = need(&s3.uri_style, "spec.backup.pgbackrest.repos[].s3.uriStyle")?;
        let _ = writeln!(s, "{p}-s3-uri-style={}", uri_style.as_str());
        let key_type = if s3.credentials_secret.is_some() {
            "shared"
        } else {
            "auto"
        };
        let _ = writeln!(s, "{p}-s3-key-type={key_type}");
        if s3.ca_secret.is_some() {
            let _ = writeln!(s, "{p}-storage-ca-file={}/ca.crt", repo_files(&p));
        }
    } else if let Some(gcs) = &repo.gcs {
        let _ = writeln!(
            s,
            "{p}-type=gcs\n{p}-path={object_path}\n{p}-gcs-bucket={}",
            ini_value("gcs.bucket", &gcs.bucket)?
        );
        match &gcs.credentials_secret {
            Some(_) => {
                let _ = writeln!(
                    s,
                    "{p}-gcs-key-type=service\n{p}-gcs-key={}/key.json",
                    repo_files(&p)
                );
            }
            None => {
                let _ = writeln!(s, "{p}-gcs-key-type=auto");
            }
        }
    } else if let Some(az) = &repo.azure {
        let _ = writeln!(
            s,
            "{p}-type=azure\n{p}-path={object_path}\n{p}-azure-account={}\n{p}-azure-container={}",
            ini_value("azure.account", &az.account)?,
            ini_value("azure.container", &az.container)?
        );
    } else if repo.volume.is_some() {
        let _ = writeln!(s, "{p}-type=posix\n{p}-path={VOLUME_ROOT}/{p}");
    }
    Ok(())
}

pub fn repo_host_conf(c: &Cluster) -> Result<String, RenderError> {
    let major = *need(&c.spec.postgres_version, "spec.postgresVersion")?;
    let instances = *need(&c.spec.instances, "spec.instances")?;
    let mut s = String::from("[global]\n");
    s.push_str(&common());
    // Backups read from the primary; a full backup starts with an immediate checkpoint.
    s.push_str("start-fast=y\n");
    for repo in c.spec.backup_repos() {
        let p = format!("repo{}", repo_index(repo)?);
        storage(&mut s, c.namespace, c.name, repo)?;
        let retention = need(&repo.retention, "spec.backup.pgbackrest.repos[].retention")?;
        let _ = writeln!(
            s,
            "{p}-retention-full={}",
            need(
                &retention.full,
                "spec.backup.pgbackrest.repos[].retention.full"
            )?
        );
        let _ = writeln!(
            s,
            "{p}-retention-diff={}",
            need(
                &retention.differential,
                "spec.backup.pgbackrest.repos[].retention.differential"
            )?
        );
    }
    let _ = write!(s, "\n[{STANZA}]\n");
    for ordinal in 0..instances.max(0) {
        let k = format!("pg{}", ordinal + 1);
        let _ = writeln!(
            s,
            "{k}-host={}\n{k}-host-type=tls",
            instance_host(c, ordinal)
        );
        s.push_str(&tls_files(&format!("{k}-host")));
        s.push_str(&pg_settings(&k, major));
    }
    Ok(s)
}

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    if c.spec.backup_repos().is_empty() {
        return Ok(());
    }
    out.config_maps.push(build(
        "ConfigMap",
        json!({
            "metadata": c.meta(names::pgbackrest(c.name), component::BACKUP),
            "data": {
                INSTANCE_CONF: instance_conf(c)?,
                REPO_HOST_CONF: repo_host_conf(c)?,
                ARCHIVE_PUSH: include_str!("scripts/archive-push.sh"),
                REPORT: include_str!("scripts/report.py")
            }
        }),
    )?);
    Ok(())
}
