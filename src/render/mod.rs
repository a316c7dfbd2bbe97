//! `render`: a resolved cluster → every child object, as a pure function.
//!
//! Rendering decides nothing: every value comes from the resolved spec, from the names and
//! ports in `crate::names`, or from the image contract below. A spec that is not resolved is
//! an error, never a reason to invent a default. One file per child; `Rendered` lists them in
//! apply order.

mod backup;
mod network;
mod patroni;
mod pgbackrest;
mod pod;
mod pooler;
mod rbac;
mod restore;
mod roles;
mod secrets;
mod services;
mod statefulset;
mod tls;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use crate::api::{PostgresCluster, PostgresClusterSpec};
use crate::names;

pub use pgbackrest::{ARCHIVE_ANNOTATION, INVENTORY_ANNOTATION};
pub use restore::{Restore, Source as RestoreSource};
pub use secrets::{SecretKind, SecretTemplate, secret_data};
pub use tls::api_resource as certificate_resource;

/// What the image must provide. pgpilot's images (and any image named in the catalog)
/// run PostgreSQL as this user, with binaries under `/usr/lib/postgresql/MAJOR/bin`.
pub const POSTGRES_UID: i64 = 999;
pub fn bin_dir(major: i32) -> String {
    format!("/usr/lib/postgresql/{major}/bin")
}

/// Mount points inside instance pods.
pub const PGDATA_MOUNT: &str = "/pgdata";
pub const PATRONI_CONFIG_DIR: &str = "/etc/patroni";
pub const PGBACKREST_CONFIG_DIR: &str = "/etc/pgbackrest";
pub const PGBACKREST_TLS_DIR: &str = "/etc/pgbackrest/tls";
pub const SERVER_TLS_DIR: &str = "/etc/pgpilot/tls";
/// The volume that holds the server certificate's Secret, in instance and pooler pods.
pub const SERVER_TLS_VOLUME: &str = "server-tls";
pub const SOCKET_DIR: &str = "/var/run/postgresql";

/// The data directory inside the volume, per major version, so a future major upgrade can
/// sit beside the old one.
pub fn data_dir(major: i32) -> String {
    format!("{PGDATA_MOUNT}/pg{major}")
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RenderError {
    #[error("the cluster has no {0}")]
    MissingMetadata(&'static str),
    #[error("the spec is not resolved: {0} is missing")]
    NotResolved(&'static str),
    #[error("building {what}: {reason}")]
    Build { what: String, reason: String },
}

/// Every child object of a cluster, in apply order.
#[derive(Debug, Default, Clone)]
pub struct Rendered {
    pub service_accounts: Vec<ServiceAccount>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub config_maps: Vec<ConfigMap>,
    /// Secrets are templates: the controller generates each password once and derives the
    /// other keys from it with `secret_data`.
    pub secrets: Vec<SecretTemplate>,
    pub services: Vec<Service>,
    pub network_policies: Vec<NetworkPolicy>,
    pub stateful_sets: Vec<StatefulSet>,
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    pub cron_jobs: Vec<CronJob>,
    pub deployments: Vec<Deployment>,
    pub jobs: Vec<Job>,
    /// cert-manager Certificates (a CRD, so untyped).
    pub certificates: Vec<DynamicObject>,
    /// What Patroni's dynamic configuration (kept in the DCS) should hold: the same value
    /// seeds `bootstrap.dcs`, and the controller keeps the running cluster equal to it.
    pub patroni_dynamic_config: serde_json::Value,
    /// Hash of what `patroni.yaml` holds besides the dynamic configuration, which Patroni
    /// reads only at start: the instance pod template carries it.
    pub patroni_local_config_hash: String,
}

/// Pod template annotation with the hash of a configuration file the program reads only
/// at start: a changed file changes the template, which replaces the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "pgpilot.io/config-hash";

/// A short, stable hash of a rendered file's content.
pub fn content_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Rendered {
    /// Every object in apply order, as JSON with `apiVersion` and `kind`. Secrets appear
    /// with `password` standing in for the generated password (for review, not for applying).
    pub fn objects(&self) -> Result<Vec<serde_json::Value>, RenderError> {
        fn all<T: serde::Serialize>(
            items: &[T],
            out: &mut Vec<serde_json::Value>,
        ) -> Result<(), RenderError> {
            for item in items {
                out.push(serde_json::to_value(item).map_err(|e| RenderError::Build {
                    what: "JSON".into(),
                    reason: e.to_string(),
                })?);
            }
            Ok(())
        }
        let mut out = Vec::new();
        all(&self.service_accounts, &mut out)?;
        all(&self.roles, &mut out)?;
        all(&self.role_bindings, &mut out)?;
        all(&self.config_maps, &mut out)?;
        for s in &self.secrets {
            let data = secret_data(&s.kind, "GENERATED-ONCE");
            out.push(serde_json::json!({ "apiVersion": "v1", "kind": "Secret", "metadata": s.metadata, "stringData": data }));
        }
        all(&self.services, &mut out)?;
        all(&self.network_policies, &mut out)?;
        all(&self.stateful_sets, &mut out)?;
        all(&self.pod_disruption_budgets, &mut out)?;
        all(&self.cron_jobs, &mut out)?;
        all(&self.deployments, &mut out)?;
        all(&self.jobs, &mut out)?;
        all(&self.certificates, &mut out)?;
        Ok(out)
    }
}

/// Identity of the cluster being rendered, and the resolved spec.
pub struct Cluster<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub owner: Option<OwnerReference>,
    pub spec: &'a PostgresClusterSpec,
    /// The `pgpilot.io/restart` annotation: copied into the instance pod template, so that
    /// a new value rolls every instance like any other template change.
    pub restart: Option<&'a str>,
}

impl Cluster<'_> {
    /// Labels every child carries.
    pub fn labels(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".into(), "postgres".into()),
            ("app.kubernetes.io/instance".into(), self.name.into()),
            ("app.kubernetes.io/component".into(), component.into()),
            ("app.kubernetes.io/managed-by".into(), "pgpilot".into()),
            (names::CLUSTER_LABEL.into(), self.name.into()),
        ])
    }

    /// The labels selecting a component's pods (a subset that never changes).
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (names::CLUSTER_LABEL.into(), self.name.into()),
            ("app.kubernetes.io/component".into(), component.into()),
        ])
    }

    pub fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.into()),
            labels: Some(self.labels(component)),
            owner_references: self.owner.clone().map(|o| vec![o]),
            ..Default::default()
        }
    }

    /// In-cluster DNS name of a Service.
    pub fn service_host(&self, service: &str) -> String {
        format!("{service}.{}.svc", self.namespace)
    }
}

/// Components, as the `app.kubernetes.io/component` label says them.
pub mod component {
    pub const DATABASE: &str = "database";
    pub const PATRONI: &str = "patroni";
    pub const BACKUP: &str = "backup";
    pub const REPO_HOST: &str = "repo-host";
    pub const POOLER: &str = "pooler";
    pub const ROLES: &str = "roles";
    pub const CREDENTIALS: &str = "credentials";
    pub const TLS: &str = "tls";
    pub const RESTORE: &str = "restore";
}

/// Reads a resolved field or says which one is missing.
fn need<'a, T>(value: &'a Option<T>, field: &'static str) -> Result<&'a T, RenderError> {
    value.as_ref().ok_or(RenderError::NotResolved(field))
}

/// Builds a typed object from a JSON literal; a mismatch is a bug, reported with context.
fn build<T: DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T, RenderError> {
    serde_json::from_value(value).map_err(|e| RenderError::Build {
        what: what.into(),
        reason: e.to_string(),
    })
}

/// Renders every child of a resolved cluster.
pub fn render(cluster: &PostgresCluster) -> Result<Rendered, RenderError> {
    let c = Cluster::of(cluster)?;
    let mut out = Rendered::default();
    rbac::render(&c, &mut out)?;
    secrets::render(&c, &mut out)?;
    patroni::render(&c, &mut out)?;
    pgbackrest::render(&c, &mut out)?;
    services::render(&c, &mut out)?;
    network::render(&c, &mut out)?;
    statefulset::render(&c, &mut out)?;
    backup::render(&c, &mut out)?;
    pooler::render(&c, &mut out)?;
    tls::render(&c, &mut out)?;
    roles::render(&c, &mut out)?;
    Ok(out)
}

/// The Job of an on-demand backup asked for with `pgpilot.io/backup` = `value` (see
/// `backup::request_job`). Not part of [`render`]: it is created once per request, never
/// re-applied or pruned.
pub fn backup_request_job(
    cluster: &PostgresCluster,
    value: &str,
) -> Result<Option<k8s_openapi::api::batch::v1::Job>, RenderError> {
    backup::request_job(&Cluster::of(cluster)?, value)
}

/// The Job, ConfigMap and first volume claim of a cluster created from a backup
/// (`spec.bootstrap.restore`), reading `source` (see `restore`). Not part of [`render`]:
/// the controller makes them only while the cluster waits for its first instance.
pub fn restore(cluster: &PostgresCluster, source: &RestoreSource) -> Result<Restore, RenderError> {
    let c = Cluster::of(cluster)?;
    restore::render(
        &c,
        source,
        restore::Mode::Bootstrap,
        &patroni::dynamic_config(&c)?,
    )
}

/// The full backup Job that follows the in-place restore `spec.restore` asks for (see
/// `backup::restore_backup_job`).
pub fn restore_backup_job(
    cluster: &PostgresCluster,
) -> Result<Option<k8s_openapi::api::batch::v1::Job>, RenderError> {
    backup::restore_backup_job(&Cluster::of(cluster)?)
}

/// The Job and ConfigMap of the in-place restore `spec.restore` asks for, reading the
/// cluster's own repository (see `restore`). Made once per restore id, never re-applied.
pub fn in_place_restore(cluster: &PostgresCluster) -> Result<Restore, RenderError> {
    let c = Cluster::of(cluster)?;
    let r = need(&c.spec.restore, "spec.restore")?;
    let repo = c
        .spec
        .backup_repos()
        .iter()
        .find(|x| x.name == r.repo)
        .ok_or(RenderError::NotResolved(
            "a repository of the spec in spec.restore.repo",
        ))?;
    let source = RestoreSource {
        cluster: c.name,
        repo,
    };
    restore::render(
        &c,
        &source,
        restore::Mode::InPlace,
        &patroni::dynamic_config(&c)?,
    )
}

impl<'a> Cluster<'a> {
    fn of(cluster: &'a PostgresCluster) -> Result<Self, RenderError> {
        let name = cluster
            .metadata
            .name
            .as_deref()
            .ok_or(RenderError::MissingMetadata("name"))?;
        let namespace = cluster
            .metadata
            .namespace
            .as_deref()
            .ok_or(RenderError::MissingMetadata("namespace"))?;
        let c = Cluster {
            name,
            namespace,
            owner: cluster.controller_owner_ref(&()),
            spec: &cluster.spec,
            restart: cluster
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::names::RESTART_ANNOTATION))
                .map(String::as_str),
        };
        Ok(c)
    }
}

#[cfg(test)]
mod tests;
