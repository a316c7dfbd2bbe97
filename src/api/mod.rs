//! The `pgpilot.io/v1` `PostgresCluster` API: spec and status types, nothing else.
//!
//! Doc comments on these types become the CRD's descriptions (`kubectl explain pgc.spec...`).
//! Every field is optional in the stored form unless marked; after `resolve` every field a
//! default exists for is present, so the stored object is the complete, explicit cluster.

mod parameter;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use parameter::ParameterValue;

/// A highly available PostgreSQL cluster: PostgreSQL under Patroni, with optional pgBackRest
/// backups, a pgBouncer pooler and a metrics exporter. The admission webhook writes every
/// default into the spec, so what is stored is exactly what runs.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "pgpilot.io",
    version = "v1",
    kind = "PostgresCluster",
    namespaced,
    shortname = "pgc",
    category = "all",
    doc = "A highly available PostgreSQL cluster managed by pgpilot: PostgreSQL under Patroni, with pgBackRest backups, a pgBouncer pooler and a metrics exporter.",
    status = "PostgresClusterStatus",
    printcolumn = r#"{"name": "Version", "type": "integer", "jsonPath": ".spec.postgresVersion"}"#,
    printcolumn = r#"{"name": "Instances", "type": "integer", "jsonPath": ".spec.instances"}"#,
    printcolumn = r#"{"name": "Ready", "type": "integer", "jsonPath": ".status.instances.ready"}"#,
    printcolumn = r#"{"name": "Primary", "type": "string", "jsonPath": ".status.primary"}"#,
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterSpec {
    /// PostgreSQL major version (14 to 18). Immutable: a major upgrade needs its own
    /// procedure. Defaults to the newest supported major.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("postgresVersion is immutable; a major upgrade needs its own procedure"))]
    pub postgres_version: Option<i32>,

    /// Container image with PostgreSQL, Patroni and pgBackRest. Defaults to the operator's
    /// image catalog entry for `postgresVersion`. A new image within the same major version
    /// is a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Number of PostgreSQL pods: one primary, the rest streaming replicas (1 to 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,

    /// The data volume of every instance. `size` is required.
    pub storage: StorageSpec,

    /// CPU and memory for the PostgreSQL container. PostgreSQL's memory parameters are tuned
    /// from the memory request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// PostgreSQL server configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PostgresqlSpec>,

    /// Patroni's dynamic configuration: failure detection timings and replication mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<PatroniSpec>,

    /// Roles the operator creates and keeps up to date, each with its own Secret
    /// `CLUSTER-user-NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<User>>,

    /// Databases the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<Database>>,

    /// Continuous archiving and scheduled backups with pgBackRest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,

    /// A pgBouncer connection pooler in front of the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<PoolerSpec>,

    /// Metrics for Prometheus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,

    /// Server certificate for PostgreSQL. Without it, connections are not encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// Where the pods may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<SchedulingSpec>,

    /// The Service in front of the primary (`CLUSTER-primary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,

    /// Who may reach the instances: NetworkPolicies `CLUSTER` (instances) and
    /// `CLUSTER-repo-host`, enforced by the cluster's network plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// How the cluster gets its first data: by default an empty database (`initdb`); with
    /// `restore`, a backup of another cluster. Acts once, when the cluster is created, and
    /// cannot change afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,

    /// Restores this cluster in place, keeping its name, Services and Secrets, to a point
    /// of its own backups: every instance's data is replaced. A new `id` asks for a restore,
    /// which runs once: the instances stop, Patroni's state is reset, Job
    /// `CLUSTER-restore-HASH` restores the first instance's volume (delta), it starts as the
    /// leader on a new timeline, and the others are created again from it.
    /// `status.restore` says how it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<InPlaceRestore>,

    /// While true, pgpilot changes nothing for this cluster: no child object applied, no
    /// configuration sent to Patroni, no restart, rollout or switchover. Status is still
    /// reported (condition `Paused`). For maintenance by hand. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

impl PostgresClusterSpec {
    /// The pgBackRest repositories, none when the spec has no backup section.
    pub fn backup_repos(&self) -> &[BackupRepo] {
        self.backup
            .as_ref()
            .and_then(|b| b.pgbackrest.as_ref())
            .and_then(|p| p.repos.as_deref())
            .unwrap_or_default()
    }

    /// The Secret holding PostgreSQL's server certificate of cluster `cluster`: the one
    /// named in `tls.secretName`, else the one cert-manager issues (`C-tls`); `None`
    /// without TLS.
    pub fn server_tls_secret(&self, cluster: &str) -> Option<String> {
        if !self.tls_enabled() {
            return None;
        }
        let named = self.tls.as_ref().and_then(|t| t.secret_name.clone());
        Some(named.unwrap_or_else(|| crate::names::tls_certificate(cluster)))
    }

    /// Whether PostgreSQL gets a server certificate (from an issuer or a Secret).
    pub fn tls_enabled(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.issuer_ref.is_some() || t.secret_name.is_some())
    }
}

/// The data volume of every instance.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0").message("storage.size may not shrink"))]
// `has()` is false for an explicit null (what `resolve` stores for "the cluster default"),
// so presence and value are compared: null -> "x", "x" -> "y" and "x" -> null are refused.
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("storage.storageClassName is immutable"))]
pub struct StorageSpec {
    /// Size of each instance's data volume, e.g. `10Gi`. Required; may grow, never shrink.
    pub size: Quantity,

    /// StorageClass of the data volumes; `null` means the cluster's default class. Immutable.
    #[serde(default)]
    pub storage_class_name: Option<String>,
}

/// PostgreSQL server configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresqlSpec {
    /// Server parameters (GUCs). Values the user sets always win; the memory parameters are
    /// tuned from the memory request, and the settings high availability depends on are set.
    /// Parameters Patroni or the operator manage (`port`, `listen_addresses`, `ssl*`,
    /// `archive_command`, ...) are rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, ParameterValue>>,

    /// Client authentication rules in `pg_hba.conf` syntax, first match wins. The default
    /// requires scram-sha-256 for every remote login (`hostssl` when TLS is configured) and
    /// allows replication only for the replication user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_hba: Option<Vec<String>>,
}

/// Patroni's dynamic configuration (stored in the DCS and shared by all members).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatroniSpec {
    /// Seconds the leader lock lives without renewal; the upper bound of failover time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i32>,
    /// Seconds between Patroni's HA loop runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loop_wait: Option<i32>,
    /// Seconds to retry DCS and PostgreSQL operations before demoting.
    /// `loopWait + 2 * retryTimeout` must not exceed `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timeout: Option<i32>,
    /// Bytes a replica may lag behind and still be promoted by a failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_lag_on_failover: Option<i64>,
    /// `async`: replicas may lag; `sync`: a commit waits for a synchronous standby while one
    /// is available; `strict`: a commit always waits, even with no standby left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_mode: Option<SynchronousMode>,
    /// Number of synchronous standbys when `synchronousMode` is `sync` or `strict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synchronous_node_count: Option<i32>,
    /// Keep the primary running when the Kubernetes API is unreachable, as long as every
    /// member can still be reached through Patroni's REST API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_mode: Option<bool>,
}

/// Patroni's replication mode. Not `on`/`off`: YAML 1.1 would turn those into booleans.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SynchronousMode {
    Async,
    Sync,
    Strict,
}

/// A role the operator creates and keeps up to date. Its password lives in Secret
/// `CLUSTER-user-NAME` (underscores become dashes) and is generated once.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Role name: lower-case letters, digits and underscores, starting with a letter or
    /// underscore, at most 63 bytes. `postgres`, `pg_*` and `pgpilot_*` are reserved.
    pub name: String,
    /// Role options: `LOGIN`, `NOLOGIN`, `CREATEDB`, `CREATEROLE`, `INHERIT`, `BYPASSRLS`,
    /// `REPLICATION`, `SUPERUSER` and their `NO` forms, and `CONNECTION LIMIT n`.
    /// Defaults to `[LOGIN]`. Passwords are managed by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<String>>,
    /// Databases (from `spec.databases`) on which the role gets all privileges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<String>>,
}

/// A database the operator creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// Database name: lower-case letters, digits and underscores, at most 63 bytes.
    pub name: String,
    /// Owning role: `postgres` or one of `spec.users`. Defaults to `postgres`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Continuous archiving and scheduled backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// pgBackRest: WAL archiving to every repository, scheduled backups, replica creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbackrest: Option<PgBackRestSpec>,
}

/// pgBackRest configuration (stanza `db`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PgBackRestSpec {
    /// Image for backup jobs. Defaults to the operator's catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Up to four repositories, `repo1` to `repo4`; WAL is archived to each of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repos: Option<Vec<BackupRepo>>,
}

/// One pgBackRest repository. Exactly one of `s3`, `gcs`, `azure` or `volume` is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRepo {
    /// `repo1` to `repo4`; a repository keeps its name for life.
    pub name: String,
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Repo>,
    /// A Google Cloud Storage bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsRepo>,
    /// An Azure Blob Storage container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureRepo>,
    /// A PersistentVolumeClaim owned by the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeRepo>,
    /// Cron schedules (five fields, or `@daily` and friends) for each backup type; a type
    /// without a schedule is not taken automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<BackupSchedules>,
    /// How many backups pgBackRest keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
}

/// An S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Repo {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint host and optional port, e.g. `s3.eu-west-1.amazonaws.com` or
    /// `minio.storage.svc:9000`; always reached over HTTPS.
    pub endpoint: String,
    /// Region, e.g. `eu-west-1`.
    pub region: String,
    /// How a bucket is addressed: `host` (`BUCKET.ENDPOINT`, as AWS serves it) or `path`
    /// (`ENDPOINT/BUCKET`, as most S3-compatible stores, such as MinIO, serve it).
    /// Defaults to `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_style: Option<S3UriStyle>,
    /// Secret with key `ca.crt`: the certificate authorities the endpoint's certificate is
    /// checked against, for a store whose certificate no public authority signed. Without
    /// it, the image's trust store. The certificate is always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<String>,
    /// Secret with keys `key` and `keySecret`; without it, credentials come from the
    /// pod's identity (IRSA or instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// How an S3 bucket is addressed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum S3UriStyle {
    Host,
    Path,
}

impl S3UriStyle {
    /// pgBackRest's name for it (`repoN-s3-uri-style`).
    pub fn as_str(self) -> &'static str {
        match self {
            S3UriStyle::Host => "host",
            S3UriStyle::Path => "path",
        }
    }
}

/// A Google Cloud Storage bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsRepo {
    /// Bucket name.
    pub bucket: String,
    /// Secret with key `key.json` (a service account key); without it, workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// An Azure Blob Storage container.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureRepo {
    /// Storage account name.
    pub account: String,
    /// Container name.
    pub container: String,
    /// Secret with key `key` (the account's shared key).
    pub credentials_secret: String,
}

/// A repository on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRepo {
    /// Size of the repository volume. Required; may grow, never shrink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// StorageClass of the repository volume; `null` means the cluster default.
    #[serde(default)]
    pub storage_class_name: Option<String>,
}

/// Cron schedules for each backup type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSchedules {
    /// Full backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    /// Differential backups (changes since the last full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential: Option<String>,
    /// Incremental backups (changes since the last backup of any type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<String>,
}

/// How many backups to keep; older ones, and the WAL only they need, are expired.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Full backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<i32>,
    /// Differential backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differential: Option<i32>,
}

/// How a new cluster gets its first data.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Restore a backup of another cluster (a clone, or a point-in-time recovery into a new
    /// cluster) instead of running `initdb`. Job `CLUSTER-restore` restores the first
    /// instance's volume and recovers it to the target; Patroni then starts it as the
    /// leader on a new timeline, and replicas are created from it as usual. The new
    /// cluster's own backups go to its own repositories, never to the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<BootstrapRestore>,
}

/// A backup to start a new cluster from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapRestore {
    /// The cluster whose backups are restored, in the same namespace. Its repository is
    /// reached as its own instances reach it: a volume repository through its repository
    /// host, an object store directly with the credentials its spec names.
    pub cluster: String,
    /// The source's repository to restore from, `repo1` to `repo4`.
    pub repo: String,
    /// The source's repository described here, for a source cluster that no longer
    /// exists: the object store (`s3`, `gcs` or `azure`) exactly as the source's spec had
    /// it. A volume repository is deleted with its cluster and cannot be named here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<SourceRepository>,
    /// Where recovery stops. Defaults to `type: latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// The options `pgbackrest restore` runs with, resolved from `target` at admission
    /// (`type`, `target`, `target-action`, `target-exclusive`, `set`), so the stored spec
    /// shows the exact restore. `target-timeline` may be added; options pgpilot owns
    /// (stanza, paths, repository) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

/// A restore of a running cluster to a point of its own backups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InPlaceRestore {
    /// Names the restore: a new value asks for one (1 to 63 letters, digits or `-_.`).
    /// Reusing an id for another target is refused.
    pub id: String,
    /// The repository of this cluster to restore from.
    pub repo: String,
    /// Where recovery stops. Defaults to `type: latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RestoreTarget>,
    /// The options `pgbackrest restore` runs with, resolved from `target` at admission, as
    /// for `bootstrap.restore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

/// The repository of a source cluster that no longer exists: an object store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceRepository {
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Repo>,
    /// A Google Cloud Storage bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsRepo>,
    /// An Azure Blob Storage container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureRepo>,
}

impl SourceRepository {
    /// The same storage as a repository of the source's spec named `name`.
    pub fn as_repo(&self, name: &str) -> BackupRepo {
        BackupRepo {
            name: name.to_owned(),
            s3: self.s3.clone(),
            gcs: self.gcs.clone(),
            azure: self.azure.clone(),
            ..Default::default()
        }
    }
}

/// Where recovery stops.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// `latest`: replay every archived WAL segment. `time`, `lsn`, `xid`, `name` (a
    /// restore point made with `pg_create_restore_point`): stop at `value`. `immediate`:
    /// stop as soon as the backup is consistent, at the end of the backup `set` (the
    /// newest when absent).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<RestoreTargetType>,
    /// The target of `time` (RFC 3339 with an offset, e.g. `2026-05-01T12:00:00Z`), `lsn`
    /// (`0/3000060`), `xid` or `name`; absent for `latest` and `immediate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The backup to restore, by its label (`status.backups` lists them), with `immediate`
    /// only; without it, pgBackRest picks the newest backup that ends before the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<String>,
    /// Stop just before the target instead of just after it (`time`, `lsn`, `xid`).
    /// Defaults to false for those types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclusive: Option<bool>,
}

/// Kinds of recovery target.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RestoreTargetType {
    Latest,
    Time,
    Lsn,
    Xid,
    Name,
    Immediate,
}

impl RestoreTargetType {
    pub const ALL: [RestoreTargetType; 6] = [
        RestoreTargetType::Latest,
        RestoreTargetType::Time,
        RestoreTargetType::Lsn,
        RestoreTargetType::Xid,
        RestoreTargetType::Name,
        RestoreTargetType::Immediate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RestoreTargetType::Latest => "latest",
            RestoreTargetType::Time => "time",
            RestoreTargetType::Lsn => "lsn",
            RestoreTargetType::Xid => "xid",
            RestoreTargetType::Name => "name",
            RestoreTargetType::Immediate => "immediate",
        }
    }

    /// Whether the type stops at a `value`.
    pub fn has_value(self) -> bool {
        matches!(
            self,
            RestoreTargetType::Time
                | RestoreTargetType::Lsn
                | RestoreTargetType::Xid
                | RestoreTargetType::Name
        )
    }

    /// Whether `exclusive` applies (PostgreSQL's `recovery_target_inclusive`).
    pub fn may_exclude(self) -> bool {
        matches!(
            self,
            RestoreTargetType::Time | RestoreTargetType::Lsn | RestoreTargetType::Xid
        )
    }
}

/// pgBouncer in front of the primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerSpec {
    /// Run the pooler. Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// pgBouncer image. Defaults to the operator's catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// pgBouncer pods. Defaults to 2 when the cluster has replicas, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i32>,
    /// `session`, `transaction` or `statement` pooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<PoolMode>,
    /// Client connections each pgBouncer accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_client_connections: Option<i32>,
    /// Server connections per user and database pair, per pgBouncer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_pool_size: Option<i32>,
    /// CPU and memory for pgBouncer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// pgBouncer's pool mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    Session,
    Transaction,
    Statement,
}

/// Metrics for Prometheus.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// A postgres_exporter sidecar in every pod, connecting as its own monitoring role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<ExporterSpec>,
}

/// The metrics exporter sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExporterSpec {
    /// Run the exporter. Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Exporter image. Defaults to the operator's catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Metrics port. Default 9187.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// CPU and memory for the exporter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// Server certificate for PostgreSQL: from cert-manager (`issuerRef`) or an existing Secret
/// (`secretName`, keys `tls.crt`, `tls.key` and `ca.crt`). Exactly one of the two.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// A cert-manager issuer; the operator requests Certificate `CLUSTER-tls` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// An existing Secret of type `kubernetes.io/tls` with `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// A cert-manager issuer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Issuer name.
    pub name: String,
    /// `Issuer` (same namespace) or `ClusterIssuer`. Default `Issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// API group of the issuer. Default `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Where the pods may run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Spread instances over nodes: `preferred` (best effort), `required` (never two on one
    /// node) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
    /// Node labels the pods require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Topology spread constraints; the label selector defaults to the cluster's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    /// PriorityClass of the pods; `null` means none.
    #[serde(default)]
    pub priority_class_name: Option<String>,
}

/// Pod anti-affinity between the instances of one cluster, on the node hostname.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AntiAffinity {
    Preferred,
    Required,
    None,
}

/// The Service in front of the primary.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP`, `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<ServiceType>,
    /// Annotations for the Service (load-balancer settings, for example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Client CIDRs a `LoadBalancer` accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_source_ranges: Option<Vec<String>>,
}

/// NetworkPolicies for the cluster's pods. PostgreSQL's port (and the exporter's) stay open
/// to every client; Patroni's API (8008) admits only the cluster's instances and the
/// operator's pods; pgBackRest's port (8432) only the cluster's own pods and restore Jobs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Render the NetworkPolicies. Defaults to the operator configuration's
    /// `networkPolicy.enabled` (true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The namespace the operator runs in: its pods (`app.kubernetes.io/name: pgpilot`)
    /// may call Patroni's API. Defaults to the operator's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_namespace: Option<String>,
}

/// Kubernetes Service type of the primary Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Observed state, written by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresClusterStatus {
    /// The generation the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Creating`, `Running`, `Updating`, `Degraded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Desired and ready instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstancesStatus>,
    /// Pod that Patroni elected leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// `Resolved`, `Reconciled`, `ConfigApplied` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Every instance as Patroni publishes it on its pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub members: Vec<ClusterMember>,
    /// The switchover asked for last with the `pgpilot.io/switchover` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switchover: Option<LastSwitchover>,
    /// The backup asked for last with the `pgpilot.io/backup` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
    /// The backups pgBackRest keeps, as the primary last listed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupInventory>,
    /// The in-place restore asked for last (`spec.restore`), and how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreStatus>,
}

impl RestoreStatus {
    /// Whether the restore has ended (`Succeeded` or `Failed`).
    pub fn finished(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// An in-place restore and how it went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatus {
    /// `spec.restore.id`.
    pub id: String,
    /// `Stopping` (the instances), `Restoring` (the Job runs), `Starting` (the restored
    /// instance, alone), `Recreating` (the other instances, from it), then `Succeeded` or
    /// `Failed`.
    pub phase: String,
    /// The restore pgBackRest runs: repository and options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// The timeline the restored cluster runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// Where recovery stopped (`X/Y`): the LSN at which `timeline` began, from the
    /// restored leader's timeline history as Patroni lists it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached_lsn: Option<String>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// pgBackRest's inventory (`pgbackrest info`), listed by the primary after each backup
/// and every half hour.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupInventory {
    /// When the primary listed it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Why it could not be listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a restore can reach: from the end of the oldest backup (`earliest`) to the end
    /// of the newest (`latest`); archived WAL (`repos[].walMax`) reaches further.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window: Option<RecoveryWindow>,
    /// Each repository.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<RepoInventory>,
}

/// The span of time a restore can reach.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryWindow {
    /// RFC 3339.
    pub earliest: String,
    /// RFC 3339.
    pub latest: String,
}

/// One repository's backups and WAL archive.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepoInventory {
    /// `repo1` to `repo4`.
    pub name: String,
    /// pgBackRest's status of the repository (`ok`, or what is wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Oldest WAL segment in the archive (current database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_min: Option<String>,
    /// Newest WAL segment in the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_max: Option<String>,
    /// Backups the repository holds, oldest first (the newest N, N from the operator
    /// configuration).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backups: Vec<BackupEntry>,
    /// Backups left out of `backups` (older ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted: Option<i64>,
}

/// One backup, as pgBackRest lists it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupEntry {
    /// pgBackRest's label (`--set` of a restore).
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub type_: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// Bytes of the database when backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Bytes the backup set takes in the repository (with the backups it depends on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_size: Option<i64>,
    /// Bytes this backup added to the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_delta: Option<i64>,
    /// First WAL segment the backup needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_start: Option<String>,
    /// Last WAL segment the backup needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_stop: Option<String>,
    /// pgBackRest found a page checksum error while copying.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub error: bool,
}

/// A backup asked for with the `pgpilot.io/backup` annotation, and how it went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBackup {
    /// The annotation's value: `REPO:TYPE`, optionally followed by `@` and a word that
    /// makes a repeated request new.
    pub request: String,
    /// The Job that takes the backup (`CLUSTER-backup-HASH`, one per request).
    pub job: String,
    /// `Pending` while another backup of the cluster runs (pgBackRest takes one at a
    /// time), `Running` once its Job exists, then `Succeeded` or `Failed`.
    pub phase: String,
    /// When the Job was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the Job completed or failed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A switchover asked for with the `pgpilot.io/switchover` annotation, and how it went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSwitchover {
    /// The annotation's value: `any` or a member, optionally followed by `@` and a word
    /// that makes a repeated request new.
    pub target: String,
    /// The primary before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The primary after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// When it ended, or while `InProgress` when Patroni was asked (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `Succeeded` or `Failed`; `InProgress` from just before Patroni is asked until the
    /// outcome is known (an operator that takes over finishes it by looking at the
    /// members, never by asking again).
    pub outcome: String,
    /// What happened, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One instance, as its Patroni reports it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    /// The pod.
    pub name: String,
    /// `primary`, `replica`, ... (absent until Patroni reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `running`, `starting`, `restarting`, `creating replica`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// PostgreSQL timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,
    /// WAL behind the primary, in bytes rounded down to whole MiB (replicas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    /// PostgreSQL runs with settings that take effect only after a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,
}

/// Lifecycle phase of a cluster.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Creating,
    Running,
    /// Every instance runs, and a changed configuration is being applied or restarted into.
    Updating,
    Degraded,
    Failed,
}

/// Desired and ready instances.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstancesStatus {
    /// `spec.instances`.
    pub desired: i32,
    /// Pods whose Patroni reports ready.
    pub ready: i32,
}
