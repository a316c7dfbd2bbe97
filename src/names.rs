//! Names and labels of everything pgpilot creates: defined once, used by validation (to
//! reject a cluster whose children could not exist) and by rendering.

/// Label Patroni maintains on each pod: `primary` or `replica`.
pub const ROLE_LABEL: &str = "pgpilot.io/role";
pub const ROLE_PRIMARY: &str = "primary";
pub const ROLE_REPLICA: &str = "replica";
/// Label carrying the cluster name on every child.
pub const CLUSTER_LABEL: &str = "pgpilot.io/cluster";

/// Roles the operator owns inside PostgreSQL; users may not take these names.
pub const SUPERUSER: &str = "postgres";
pub const REPLICATION_USER: &str = "pgpilot_replication";
pub const POOLER_USER: &str = "pgpilot_pooler";
pub const MONITOR_USER: &str = "pgpilot_monitor";
/// Prefix reserved for the operator's roles.
pub const RESERVED_ROLE_PREFIX: &str = "pgpilot_";

/// Ports inside an instance pod.
pub const POSTGRES_PORT: i32 = 5432;
pub const PATRONI_PORT: i32 = 8008;
pub const PGBACKREST_PORT: i32 = 8432;
pub const RESERVED_PORTS: [i32; 3] = [POSTGRES_PORT, PATRONI_PORT, PGBACKREST_PORT];

/// Common name of the certificate pgBackRest's TLS servers accept from clients.
pub const PGBACKREST_CLIENT_CN: &str = "pgbackrest";

/// Length of the hash in a roles Job's name.
pub const ROLES_HASH_LEN: usize = 10;

/// Kubernetes' limits that child names run into.
/// A StatefulSet's and a CronJob's name must leave room for the suffixes their controllers
/// append in labels (controller-revision-hash, job names), which are capped at 63.
pub const STATEFULSET_MAX: usize = 52;
pub const CRONJOB_MAX: usize = 52;
/// DNS-1035 labels (Services) and label values (`job-name`).
pub const LABEL_MAX: usize = 63;
/// DNS-1123 subdomains (Secrets, ConfigMaps, Roles).
pub const SUBDOMAIN_MAX: usize = 253;

/// Annotations of a PostgresCluster that ask for an operation; the webhook rejects any
/// other `pgpilot.io/` key.
pub const SWITCHOVER_ANNOTATION: &str = "pgpilot.io/switchover";
pub const RESTART_ANNOTATION: &str = "pgpilot.io/restart";
pub const OPERATION_ANNOTATIONS: [&str; 2] = [RESTART_ANNOTATION, SWITCHOVER_ANNOTATION];
/// The switchover target that lets pgpilot choose the member.
pub const SWITCHOVER_ANY: &str = "any";

/// The member (or `any`) a `pgpilot.io/switchover` value names: what precedes an optional
/// `@word`, which only makes a repeated request new.
pub fn switchover_target(value: &str) -> &str {
    value.split('@').next().unwrap_or_default().trim()
}

pub fn statefulset(cluster: &str) -> String {
    cluster.to_owned()
}
pub fn patroni(cluster: &str) -> String {
    format!("{cluster}-patroni")
}
pub fn patroni_api_secret(cluster: &str) -> String {
    format!("{cluster}-patroni-api")
}
/// The Endpoints in which Patroni's Kubernetes DCS keeps the synchronous standbys
/// (annotation `sync_standby`), named after Patroni's `scope`, the cluster.
pub fn patroni_sync(cluster: &str) -> String {
    format!("{cluster}-sync")
}
pub fn pgbackrest(cluster: &str) -> String {
    format!("{cluster}-pgbackrest")
}
/// pgBackRest's repository host (StatefulSet and its headless Service).
pub fn repo_host(cluster: &str) -> String {
    format!("{cluster}-repo-host")
}
/// Certificates for pgBackRest's TLS server, generated once by the controller.
pub fn pgbackrest_tls_secret(cluster: &str) -> String {
    format!("{cluster}-pgbackrest-tls")
}
pub fn superuser_secret(cluster: &str) -> String {
    format!("{cluster}-superuser")
}
pub fn replication_secret(cluster: &str) -> String {
    format!("{cluster}-replication")
}
pub fn exporter_secret(cluster: &str) -> String {
    format!("{cluster}-exporter")
}
/// Secret of a user: underscores (legal in role names, not in object names) become dashes.
pub fn user_secret(cluster: &str, user: &str) -> String {
    format!("{cluster}-user-{}", user.replace('_', "-"))
}
pub fn primary_service(cluster: &str) -> String {
    format!("{cluster}-primary")
}
pub fn replicas_service(cluster: &str) -> String {
    format!("{cluster}-replicas")
}
pub fn pods_service(cluster: &str) -> String {
    format!("{cluster}-pods")
}
pub fn pooler(cluster: &str) -> String {
    format!("{cluster}-pooler")
}
pub fn tls_certificate(cluster: &str) -> String {
    format!("{cluster}-tls")
}
pub fn roles_job(cluster: &str, hash: &str) -> String {
    format!("{cluster}-roles-{hash}")
}

/// The backup types pgBackRest takes on a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupType {
    Full,
    Differential,
    Incremental,
}

impl BackupType {
    /// pgBackRest's `--type` value.
    pub fn pgbackrest_type(self) -> &'static str {
        match self {
            BackupType::Full => "full",
            BackupType::Differential => "diff",
            BackupType::Incremental => "incr",
        }
    }
}

pub fn backup_cronjob(cluster: &str, repo: &str, kind: BackupType) -> String {
    format!("{cluster}-backup-{repo}-{}", kind.pgbackrest_type())
}

/// A DNS-1123 label: lower-case alphanumerics and `-`, starting and ending alphanumeric.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1035 label: a DNS-1123 label that starts with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// A DNS-1123 subdomain: dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= SUBDOMAIN_MAX && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1035_label("pg-main"));
        assert!(!is_dns1035_label("1pg"));
        assert!(is_dns1123_label("1pg"));
        assert!(!is_dns1123_label("pg-"));
        assert!(!is_dns1123_label("Pg"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(!is_dns1123_subdomain("a..b"));
    }

    #[test]
    fn user_secrets_are_dns_safe() {
        assert_eq!(user_secret("pg", "app_owner"), "pg-user-app-owner");
        assert_eq!(
            backup_cronjob("pg", "repo1", BackupType::Differential),
            "pg-backup-repo1-diff"
        );
    }
}
