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
pub const BACKUP_ANNOTATION: &str = "pgpilot.io/backup";
pub const OPERATION_ANNOTATIONS: [&str; 3] =
    [BACKUP_ANNOTATION, RESTART_ANNOTATION, SWITCHOVER_ANNOTATION];
/// The switchover target that lets pgpilot choose the member.
pub const SWITCHOVER_ANY: &str = "any";

/// The member (or `any`) a `pgpilot.io/switchover` value names: what precedes an optional
/// `@word`, which only makes a repeated request new.
pub fn switchover_target(value: &str) -> &str {
    value.split('@').next().unwrap_or_default().trim()
}

/// What a `pgpilot.io/backup` value asks for: `REPO:TYPE`, optionally followed by `@word`
/// (which only makes a repeated request new), e.g. `repo1:full@before-upgrade`. `None`
/// when it is not of that form or the type is not `full`, `diff` or `incr`.
pub fn backup_request(value: &str) -> Option<(&str, BackupType)> {
    let asked = value.split('@').next().unwrap_or_default().trim();
    let (repo, kind) = asked.split_once(':')?;
    let kind = BackupType::ALL
        .into_iter()
        .find(|t| t.pgbackrest_type() == kind)?;
    (!repo.is_empty()).then_some((repo, kind))
}

/// The Job of an on-demand backup: named after the request, so asking twice for one value
/// finds the Job the first ask made instead of making another.
pub fn backup_request_job(cluster: &str, value: &str) -> String {
    format!("{cluster}-backup-{}", backup_request_hash(value))
}

/// The first `ROLES_HASH_LEN` hex digits of SHA-256 over a `pgpilot.io/backup` value.
pub fn backup_request_hash(value: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(value.trim().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..ROLES_HASH_LEN].to_owned()
}

/// Label (the hash in the Job's name) and annotation (the request as written) of an
/// on-demand backup Job. Annotation values may hold `:` and `@`; label values may not.
pub const BACKUP_REQUEST_LABEL: &str = "pgpilot.io/backup-request";
/// Label on every backup Job (scheduled or on demand) and CronJob: the repository.
pub const REPO_LABEL: &str = "pgpilot.io/repo";
/// Label on every backup Job and CronJob: pgBackRest's `--type`.
pub const BACKUP_TYPE_LABEL: &str = "pgpilot.io/backup-type";

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
/// The Job that restores the first instance of a cluster bootstrapped from a backup, and
/// the ConfigMap with its pgBackRest configuration and script.
pub fn restore_job(cluster: &str) -> String {
    format!("{cluster}-restore")
}
/// The Job of an in-place restore (`spec.restore`), and its ConfigMap: named after the
/// restore's id, so the Job's existence records that the restore was started.
pub fn in_place_restore_job(cluster: &str, id: &str) -> String {
    format!("{cluster}-restore-{}", backup_request_hash(id))
}
/// The full backup after an in-place restore.
pub fn in_place_backup_job(cluster: &str, id: &str) -> String {
    format!("{}-backup", in_place_restore_job(cluster, id))
}
/// Annotation on the roles Job's pod template: the in-place restore it runs after.
pub const RESTORE_ID_ANNOTATION: &str = "pgpilot.io/restore-id";
/// The first instance's data volume claim, as the StatefulSet names it (template `pgdata`).
pub fn first_data_claim(cluster: &str) -> String {
    format!("pgdata-{}-0", statefulset(cluster))
}
/// Label on the restore Job: the cluster it restores into. Kept apart from the rendered
/// Jobs (never re-applied or pruned once the cluster runs).
pub const RESTORE_LABEL: &str = "pgpilot.io/restore";
pub fn roles_job(cluster: &str, hash: &str) -> String {
    format!("{cluster}-roles-{hash}")
}

/// The backup types pgBackRest takes, on a schedule or on demand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackupType {
    Full,
    Differential,
    Incremental,
}

impl BackupType {
    pub const ALL: [BackupType; 3] = [
        BackupType::Full,
        BackupType::Differential,
        BackupType::Incremental,
    ];

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
    fn backup_requests() {
        assert_eq!(
            backup_request("repo1:full"),
            Some(("repo1", BackupType::Full))
        );
        assert_eq!(
            backup_request("repo2:incr@before-upgrade"),
            Some(("repo2", BackupType::Incremental))
        );
        for bad in [
            "full",
            "repo1:",
            ":full",
            "repo1:differential",
            "repo1:full:x",
            "",
        ] {
            assert_eq!(backup_request(bad), None, "{bad}");
        }
        // One value, one Job name; another word, another Job.
        let a = backup_request_job("pg", "repo1:full@a");
        assert_eq!(a, backup_request_job("pg", " repo1:full@a "));
        assert_ne!(a, backup_request_job("pg", "repo1:full@b"));
        assert_eq!(a.len(), "pg-backup-".len() + ROLES_HASH_LEN);
    }

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
