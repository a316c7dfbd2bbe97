//! PostgreSQL parameters, pg_hba rules and the memory they must fit in.

use crate::api::{ParameterValue, PostgresClusterSpec};
use crate::names;
use crate::quantity;
use crate::resolve::tuning;

use super::field::{Errors, Path};

/// Parameters Patroni or the operator set; a user value would break replication, failover,
/// archiving or TLS, or point PostgreSQL at files that do not exist in the pod.
const OWNED: [(&str, &str); 22] = [
    ("port", "Patroni binds PostgreSQL to the pod's port 5432"),
    ("listen_addresses", "Patroni listens on the pod's address"),
    (
        "primary_conninfo",
        "Patroni points replicas at the current leader",
    ),
    ("primary_slot_name", "Patroni manages replication slots"),
    (
        "synchronous_standby_names",
        "Patroni sets it from spec.patroni.synchronousMode",
    ),
    ("archive_command", "set from spec.backup"),
    ("archive_mode", "set from spec.backup"),
    ("restore_command", "set from spec.backup"),
    (
        "recovery_target",
        "point-in-time recovery is a restore procedure, not a parameter",
    ),
    (
        "recovery_target_lsn",
        "point-in-time recovery is a restore procedure, not a parameter",
    ),
    (
        "recovery_target_name",
        "point-in-time recovery is a restore procedure, not a parameter",
    ),
    (
        "recovery_target_time",
        "point-in-time recovery is a restore procedure, not a parameter",
    ),
    (
        "recovery_target_xid",
        "point-in-time recovery is a restore procedure, not a parameter",
    ),
    ("promote_trigger_file", "Patroni promotes replicas"),
    ("data_directory", "the data directory is the pod's volume"),
    ("config_file", "Patroni writes the configuration files"),
    ("hba_file", "set spec.postgresql.pgHba instead"),
    ("ident_file", "Patroni writes the configuration files"),
    ("external_pid_file", "Patroni manages the postmaster"),
    (
        "unix_socket_directories",
        "the pod's processes share one socket directory",
    ),
    ("cluster_name", "Patroni names the cluster"),
    ("ssl", "set from spec.tls"),
];

/// Bounds on what a parameter map may hold.
const MAX_PARAMETERS: usize = 500;
const MAX_VALUE_BYTES: usize = 4096;

pub fn postgresql(s: &PostgresClusterSpec, e: &mut Errors) {
    let Some(pg) = &s.postgresql else { return };
    let p = Path::new("spec").child("postgresql");
    if let Some(params) = &pg.parameters {
        let pp = p.child("parameters");
        if params.len() > MAX_PARAMETERS {
            e.too_many(&pp, params.len(), MAX_PARAMETERS);
        }
        for (name, value) in params {
            parameter(&pp.key(name), name, value, s, e);
        }
        memory_fits(&pp, s, e);
    }
    if let Some(rules) = &pg.pg_hba {
        pg_hba(&p.child("pgHba"), rules, s.tls_enabled(), e);
    }
}

fn parameter(
    path: &Path,
    name: &str,
    value: &ParameterValue,
    s: &PostgresClusterSpec,
    e: &mut Errors,
) {
    let v = value.as_str();
    let valid_name = |part: &str| {
        part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    // Extension settings are `extension.name`; core settings are one identifier.
    if name.len() > 63 || name.split('.').count() > 2 || !name.split('.').all(valid_name) {
        return e.invalid_str(path, name, "must be a parameter name: lower-case letters, digits and '_', optionally prefixed by an extension name and '.'");
    }
    if let Some((_, why)) = OWNED.iter().find(|(n, _)| *n == name) {
        return e.forbidden(path, format!("managed by the operator: {why}"));
    }
    if name.starts_with("ssl_") {
        return e.forbidden(path, "managed by the operator: set from spec.tls");
    }
    if v.len() > MAX_VALUE_BYTES || v.chars().any(char::is_control) {
        return e.invalid_str(
            path,
            v,
            format!("must be at most {MAX_VALUE_BYTES} bytes without control characters"),
        );
    }
    let instances = super::instances(s);
    match name {
        "wal_level" if !["replica", "logical"].contains(&v) => {
            e.not_supported(path, v, &["replica", "logical"]);
        }
        "hot_standby" | "wal_log_hints" if !is_on(v) => {
            e.invalid_str(
                path,
                v,
                "must be on: Patroni needs it for replicas and pg_rewind",
            );
        }
        "password_encryption" if v != "scram-sha-256" => {
            e.not_supported(path, v, &["scram-sha-256"]);
        }
        "max_wal_senders" | "max_replication_slots" => {
            let min = i64::from(instances) + 1;
            match v.parse::<i64>() {
                Ok(n) if (min..=262_143).contains(&n) => {}
                _ => e.invalid_str(path, v, format!("must be a whole number of at least {min}: one per replica plus two for base backups and pg_rewind")),
            }
        }
        "max_connections" => match v.parse::<i64>() {
            Ok(n) if (10..=262_143).contains(&n) => {}
            _ => e.invalid_str(path, v, "must be a whole number between 10 and 262143"),
        },
        _ => {
            if tuning::memory_unit(name).is_some() && tuning::parameter_bytes(name, v).is_none() {
                e.invalid_str(
                    path,
                    v,
                    "must be a size such as 512MB, 4GB or a number in the parameter's unit",
                );
            }
        }
    }
}

/// PostgreSQL's boolean spellings of "on".
fn is_on(v: &str) -> bool {
    ["on", "true", "yes", "1"].contains(&v.to_ascii_lowercase().as_str())
}

/// shared_buffers must fit below the container's memory limit, or PostgreSQL is killed at
/// the first busy moment.
fn memory_fits(pp: &Path, s: &PostgresClusterSpec, e: &mut Errors) {
    let params = s.postgresql.as_ref().and_then(|p| p.parameters.as_ref());
    let Some(shared) = params.and_then(|m| m.get("shared_buffers")) else {
        return;
    };
    let Some(bytes) = tuning::parameter_bytes("shared_buffers", shared.as_str()) else {
        return;
    };
    let limit = s
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"));
    if let Some(limit) = limit
        && let Ok(limit_bytes) = quantity::bytes(&limit.0)
        && bytes >= limit_bytes
    {
        e.invalid_str(
            &pp.key("shared_buffers"),
            shared.as_str(),
            format!("must be smaller than the memory limit of {}", limit.0),
        );
    }
}

const HBA_TYPES: [&str; 6] = [
    "local",
    "host",
    "hostssl",
    "hostnossl",
    "hostgssenc",
    "hostnogssenc",
];
const HBA_METHODS: [&str; 14] = [
    "trust",
    "reject",
    "scram-sha-256",
    "md5",
    "password",
    "gss",
    "sspi",
    "ident",
    "peer",
    "ldap",
    "radius",
    "cert",
    "pam",
    "bsd",
];
const MAX_HBA_RULES: usize = 200;

/// Each rule is one well-formed pg_hba line; remote `trust` is refused; someone must still be
/// able to replicate, or replicas cannot stream.
fn pg_hba(p: &Path, rules: &[String], tls: bool, e: &mut Errors) {
    if rules.len() > MAX_HBA_RULES {
        e.too_many(p, rules.len(), MAX_HBA_RULES);
    }
    let mut replication_allowed = false;
    for (i, rule) in rules.iter().enumerate() {
        let rp = p.index(i);
        if rule.len() > 1024 || rule.chars().any(char::is_control) {
            e.invalid_str(&rp, rule, "must be one line of at most 1024 characters");
            continue;
        }
        let fields: Vec<&str> = rule.split_whitespace().collect();
        let Some(&kind) = fields.first() else {
            e.invalid_str(&rp, rule, "must not be empty");
            continue;
        };
        if kind.starts_with('#') {
            e.invalid_str(&rp, rule, "comments are not rules; remove the entry");
            continue;
        }
        if kind.starts_with("include") {
            e.forbidden(
                &rp,
                "include directives read files that do not exist in the pod",
            );
            continue;
        }
        if !HBA_TYPES.contains(&kind) {
            e.invalid_str(
                &rp,
                rule,
                format!(
                    "must start with a connection type: {}",
                    HBA_TYPES.join(", ")
                ),
            );
            continue;
        }
        // local: type database user method; host*: type database user address method
        // (or address mask method).
        let method_at = if kind == "local" {
            3
        } else if fields
            .get(4)
            .is_some_and(|f| f.contains('.') || f.contains(':'))
            && !HBA_METHODS.contains(&fields[4])
        {
            5
        } else {
            4
        };
        let Some(&method) = fields.get(method_at) else {
            e.invalid_str(&rp, rule, "is missing fields: expected type, database, user, address (except for local) and method");
            continue;
        };
        if !HBA_METHODS.contains(&method) {
            e.invalid_str(
                &rp,
                rule,
                format!("{method:?} is not an authentication method"),
            );
            continue;
        }
        if kind != "local" && method == "trust" {
            e.forbidden(&rp, "trust over the network lets anyone in without a password; use scram-sha-256 or cert");
        }
        if kind == "hostssl" && !tls {
            e.invalid_str(
                &rp,
                rule,
                "hostssl rules need spec.tls: without a certificate no connection can use SSL",
            );
        }
        if method == "password" {
            e.warn(
                &rp,
                "the password method sends passwords in clear text; use scram-sha-256",
            );
        }
        let databases = fields[1].split(',');
        let users: Vec<&str> = fields[2].split(',').collect();
        let for_replicator = users
            .iter()
            .any(|u| *u == "all" || *u == names::REPLICATION_USER);
        if kind != "local"
            && method != "reject"
            && for_replicator
            && databases.clone().any(|d| d == "replication")
        {
            replication_allowed = true;
        }
    }
    if !rules.is_empty() && !replication_allowed {
        e.invalid(
            p,
            "[...]",
            format!(
                "must allow remote replication connections for {}: replicas could not stream",
                names::REPLICATION_USER
            ),
        );
    }
}
