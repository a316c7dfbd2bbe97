//! One test per rule: each starts from a valid resolved cluster, breaks one thing, and
//! asserts the exact field path and the gist of the message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::*;
use crate::config::Config;
use crate::resolve::resolve;

fn cluster(yaml: &str) -> PostgresCluster {
    let spec: PostgresClusterSpec = serde_yaml::from_str(yaml).unwrap();
    PostgresCluster::new("demo", resolve(&spec, None, &Config::default()))
}

fn base() -> PostgresCluster {
    cluster(
        "instances: 3\nstorage: {size: 10Gi}\npatroni: {synchronousMode: sync}\nscheduling: {antiAffinity: required}\ntls: {secretName: demo-cert}\nbackup: {pgbackrest: {repos: [{name: repo1, volume: {size: 10Gi}}]}}",
    )
}

fn errors(c: &PostgresCluster, old: Option<&PostgresCluster>) -> Vec<String> {
    validate(c, old)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Breaks `base()` with `change` and expects exactly one error, at `path`, containing `gist`.
#[track_caller]
fn rejects(change: impl FnOnce(&mut PostgresCluster), path: &str, gist: &str) {
    let mut c = base();
    change(&mut c);
    let errs = validate(&c, None).errors;
    assert_eq!(
        errs.len(),
        1,
        "expected one error at {path}, got {:#?}",
        errs.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert_eq!(errs[0].path, path);
    let text = errs[0].to_string();
    assert!(text.contains(gist), "{text:?} does not contain {gist:?}");
}

/// Like `rejects`, for changes that also (rightly) trip other rules.
#[track_caller]
fn rejects_among(change: impl FnOnce(&mut PostgresCluster), path: &str, gist: &str) {
    let mut c = base();
    change(&mut c);
    let errs = validate(&c, None).errors;
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.to_string().contains(gist)),
        "no {gist:?} at {path} in {errs:#?}"
    );
}

#[track_caller]
fn warns(change: impl FnOnce(&mut PostgresCluster), gist: &str) {
    let mut c = base();
    change(&mut c);
    let out = validate(&c, None);
    assert_eq!(out.errors, vec![]);
    assert!(
        out.warnings.iter().any(|w| w.contains(gist)),
        "{:?} has no {gist:?}",
        out.warnings
    );
}

fn exporter_of(c: &mut PostgresCluster) -> &mut ExporterSpec {
    c.spec
        .monitoring
        .as_mut()
        .unwrap()
        .exporter
        .as_mut()
        .unwrap()
}

fn params(c: &mut PostgresCluster) -> &mut BTreeMap<String, ParameterValue> {
    c.spec
        .postgresql
        .as_mut()
        .unwrap()
        .parameters
        .as_mut()
        .unwrap()
}

fn set_param(c: &mut PostgresCluster, k: &str, v: &str) {
    params(c).insert(k.into(), v.into());
}

fn repo(c: &mut PostgresCluster) -> &mut BackupRepo {
    &mut c
        .spec
        .backup
        .as_mut()
        .unwrap()
        .pgbackrest
        .as_mut()
        .unwrap()
        .repos
        .as_mut()
        .unwrap()[0]
}

fn hba(c: &mut PostgresCluster, rules: &[&str]) {
    c.spec.postgresql.as_mut().unwrap().pg_hba =
        Some(rules.iter().map(|s| s.to_string()).collect());
}

#[test]
fn the_base_is_valid_and_quiet() {
    let out = validate(&base(), None);
    assert_eq!(out, Outcome::default());
}

#[test]
fn every_error_is_reported_at_once() {
    let mut c = base();
    c.spec.instances = Some(0);
    c.spec.postgres_version = Some(13);
    c.spec.storage.size = Quantity("lots".into());
    let errs = errors(&c, None);
    assert_eq!(
        errs,
        [
            "spec.postgresVersion: Unsupported value: \"13\": supported values: \"14\", \"15\", \"16\", \"17\", \"18\"",
            "spec.instances: Invalid value: 0: must be between 1 and 16",
            "spec.storage.size: Invalid value: \"lots\": must start with a number",
            // With no instances, synchronous replication has no standby either.
            "spec.patroni.synchronousMode: Invalid value: \"sync\": needs at least 2 instances: there is no standby to wait for",
            "spec.patroni.synchronousNodeCount: Invalid value: 1: must be between 1 and 1",
        ]
        .map(String::from)
        .into_iter()
        .filter(|e| !e.contains("synchronousNodeCount"))
        .collect::<Vec<_>>()
    );
}

// metadata

#[test]
fn name_must_be_dns_1035() {
    rejects(
        |c| c.metadata.name = Some("1st".into()),
        "metadata.name",
        "DNS-1035",
    );
    rejects(
        |c| c.metadata.name = Some("Main".into()),
        "metadata.name",
        "DNS-1035",
    );
    rejects(
        |c| c.metadata.name = None,
        "metadata.name",
        "Required value",
    );
}

#[test]
fn name_must_leave_room_for_child_names() {
    rejects(
        |c| c.metadata.name = Some("a".repeat(53)),
        "metadata.name",
        "StatefulSet",
    );
    // The backup CronJob `NAME-backup-repo1-full` is the tightest limit (52).
    rejects(
        |c| c.metadata.name = Some("a".repeat(35)),
        "metadata.name",
        "must be no more than 34 characters",
    );
    let mut c = base();
    c.metadata.name = Some("a".repeat(34));
    assert_eq!(errors(&c, None), Vec::<String>::new());
}

#[test]
fn generate_name_is_checked_with_its_suffix() {
    rejects(
        |c| {
            c.metadata.name = None;
            c.metadata.generate_name = Some("a".repeat(32));
        },
        "metadata.generateName",
        "no more than",
    );
}

// spec scalars

#[test]
fn version_image_instances() {
    rejects(
        |c| c.spec.postgres_version = Some(19),
        "spec.postgresVersion",
        "Unsupported value: \"19\"",
    );
    rejects(
        |c| c.spec.image = Some("bad image".into()),
        "spec.image",
        "container image reference",
    );
    rejects(
        |c| c.spec.image = Some(String::new()),
        "spec.image",
        "container image reference",
    );
    rejects_among(
        |c| c.spec.instances = Some(17),
        "spec.instances",
        "between 1 and 16",
    );
    warns(
        |c| c.spec.image = Some("example.com/pg".into()),
        "no fixed tag or digest",
    );
    warns(
        |c| c.spec.image = Some("example.com/pg:latest".into()),
        "no fixed tag or digest",
    );
}

#[test]
fn storage() {
    rejects(
        |c| c.spec.storage.size = Quantity("500Mi".into()),
        "spec.storage.size",
        "at least 1Gi",
    );
    rejects(
        |c| c.spec.storage.size = Quantity("10GB!".into()),
        "spec.storage.size",
        "unknown suffix",
    );
    rejects(
        |c| c.spec.storage.storage_class_name = Some("Fast SSD".into()),
        "spec.storage.storageClassName",
        "StorageClass name",
    );
}

#[test]
fn resources() {
    let set = |c: &mut PostgresCluster, which: &str, k: &str, v: &str| {
        let r = c.spec.resources.as_mut().unwrap();
        let m = if which == "requests" {
            r.requests.as_mut()
        } else {
            r.limits.as_mut()
        };
        m.unwrap().insert(k.into(), Quantity(v.into()));
    };
    rejects(
        |c| set(c, "requests", "memory", "2Gi"),
        "spec.resources.requests[memory]",
        "less than or equal to the memory limit of 1Gi",
    );
    rejects(
        |c| set(c, "requests", "cpu", "0"),
        "spec.resources.requests[cpu]",
        "greater than zero",
    );
    rejects(
        |c| set(c, "limits", "cpu", "many"),
        "spec.resources.limits[cpu]",
        "must start with a number",
    );
    rejects(
        |c| {
            set(c, "requests", "memory", "128Mi");
            set(c, "limits", "memory", "128Mi");
            set_param(c, "shared_buffers", "32MB");
        },
        "spec.resources.requests[memory]",
        "at least 256Mi",
    );
}

// postgresql.parameters

#[test]
fn operator_owned_parameters_are_forbidden() {
    for name in [
        "port",
        "listen_addresses",
        "archive_command",
        "restore_command",
        "primary_conninfo",
        "data_directory",
        "ssl",
        "ssl_cert_file",
        "synchronous_standby_names",
    ] {
        rejects(
            |c| set_param(c, name, "x"),
            &format!("spec.postgresql.parameters[{name}]"),
            "Forbidden: managed by the operator",
        );
    }
}

#[test]
fn parameter_names_and_values() {
    rejects(
        |c| set_param(c, "Shared Buffers", "1"),
        "spec.postgresql.parameters[Shared Buffers]",
        "parameter name",
    );
    rejects(
        |c| set_param(c, "a.b.c", "1"),
        "spec.postgresql.parameters[a.b.c]",
        "parameter name",
    );
    rejects(
        |c| set_param(c, "search_path", "a\nport = 1"),
        "spec.postgresql.parameters[search_path]",
        "control characters",
    );
    rejects(
        |c| set_param(c, "search_path", &"x".repeat(5000)),
        "spec.postgresql.parameters[search_path]",
        "at most 4096 bytes",
    );
    let mut c = base();
    set_param(&mut c, "pg_stat_statements.track", "all");
    assert_eq!(errors(&c, None), Vec::<String>::new());
}

#[test]
fn ha_parameters_cannot_be_weakened() {
    rejects(
        |c| set_param(c, "wal_level", "minimal"),
        "spec.postgresql.parameters[wal_level]",
        "supported values: \"replica\", \"logical\"",
    );
    rejects(
        |c| set_param(c, "hot_standby", "off"),
        "spec.postgresql.parameters[hot_standby]",
        "must be on",
    );
    rejects(
        |c| set_param(c, "wal_log_hints", "off"),
        "spec.postgresql.parameters[wal_log_hints]",
        "must be on",
    );
    rejects(
        |c| set_param(c, "password_encryption", "md5"),
        "spec.postgresql.parameters[password_encryption]",
        "scram-sha-256",
    );
    rejects(
        |c| set_param(c, "max_wal_senders", "3"),
        "spec.postgresql.parameters[max_wal_senders]",
        "at least 4",
    );
    rejects(
        |c| set_param(c, "max_replication_slots", "x"),
        "spec.postgresql.parameters[max_replication_slots]",
        "whole number",
    );
    rejects(
        |c| set_param(c, "max_connections", "5"),
        "spec.postgresql.parameters[max_connections]",
        "between 10 and 262143",
    );
    let mut c = base();
    set_param(&mut c, "hot_standby", "true");
    set_param(&mut c, "wal_level", "logical");
    assert_eq!(errors(&c, None), Vec::<String>::new());
}

#[test]
fn memory_parameters() {
    rejects(
        |c| set_param(c, "work_mem", "lots"),
        "spec.postgresql.parameters[work_mem]",
        "must be a size",
    );
    rejects(
        |c| set_param(c, "shared_buffers", "1GB"),
        "spec.postgresql.parameters[shared_buffers]",
        "smaller than the memory limit of 1Gi",
    );
    rejects(
        |c| set_param(c, "shared_buffers", "131072"),
        "spec.postgresql.parameters[shared_buffers]",
        "smaller than the memory limit",
    );
}

#[test]
fn too_many_parameters() {
    rejects(
        |c| {
            for i in 0..500 {
                set_param(c, &format!("custom.p{i}"), "1");
            }
        },
        "spec.postgresql.parameters",
        "Too many",
    );
}

// pg_hba

#[test]
fn pg_hba_rules() {
    let p = "spec.postgresql.pgHba";
    let ok = "hostssl replication pgpilot_replication all scram-sha-256";
    rejects(
        |c| hba(c, &[ok, "host all all 0.0.0.0/0 trust"]),
        &format!("{p}[1]"),
        "trust over the network",
    );
    rejects(
        |c| hba(c, &[ok, "hots all all all md5"]),
        &format!("{p}[1]"),
        "connection type",
    );
    rejects(
        |c| hba(c, &[ok, "host all all"]),
        &format!("{p}[1]"),
        "missing fields",
    );
    rejects(
        |c| hba(c, &[ok, "host all all all magic"]),
        &format!("{p}[1]"),
        "not an authentication method",
    );
    rejects(
        |c| hba(c, &[ok, "include_dir /etc"]),
        &format!("{p}[1]"),
        "include",
    );
    rejects(
        |c| hba(c, &[ok, ""]),
        &format!("{p}[1]"),
        "must not be empty",
    );
    rejects(|c| hba(c, &[ok, "# note"]), &format!("{p}[1]"), "comments");
    rejects(
        |c| hba(c, &[ok, "host all all all md5\nlocal all all trust"]),
        &format!("{p}[1]"),
        "one line",
    );
    rejects(
        |c| hba(c, &["hostssl all all all scram-sha-256"]),
        p,
        "must allow remote replication",
    );
    rejects(
        |c| {
            c.spec.tls = None;
            hba(
                c,
                &[
                    "host replication all 10.0.0.0 255.0.0.0 scram-sha-256",
                    "hostssl all all all scram-sha-256",
                ],
            );
        },
        &format!("{p}[1]"),
        "hostssl rules need spec.tls",
    );
    warns(
        |c| hba(c, &[ok, "host all all 10.0.0.0/8 password"]),
        "clear text",
    );
}

// patroni

#[test]
fn patroni_timings() {
    rejects(
        |c| c.spec.patroni.as_mut().unwrap().ttl = Some(25),
        "spec.patroni.ttl",
        "at least loopWait + 2 * retryTimeout = 30",
    );
    rejects(
        |c| c.spec.patroni.as_mut().unwrap().ttl = Some(5000),
        "spec.patroni.ttl",
        "between 20 and 3600",
    );
    rejects(
        |c| c.spec.patroni.as_mut().unwrap().loop_wait = Some(0),
        "spec.patroni.loopWait",
        "between 1 and 3600",
    );
    rejects(
        |c| c.spec.patroni.as_mut().unwrap().retry_timeout = Some(2),
        "spec.patroni.retryTimeout",
        "between 3 and 3600",
    );
    rejects(
        |c| c.spec.patroni.as_mut().unwrap().maximum_lag_on_failover = Some(-1),
        "spec.patroni.maximumLagOnFailover",
        "zero or more",
    );
    rejects(
        |c| c.spec.patroni.as_mut().unwrap().synchronous_node_count = Some(3),
        "spec.patroni.synchronousNodeCount",
        "between 1 and 2",
    );
}

#[test]
fn synchronous_mode_needs_a_standby() {
    rejects(
        |c| {
            c.spec.instances = Some(1);
            c.spec
                .postgresql
                .as_mut()
                .unwrap()
                .parameters
                .as_mut()
                .unwrap()
                .insert("max_wal_senders".into(), "10".into());
        },
        "spec.patroni.synchronousMode",
        "needs at least 2 instances",
    );
    warns(
        |c| c.spec.patroni.as_mut().unwrap().synchronous_mode = Some(SynchronousMode::Async),
        "async with 3 instances",
    );
    warns(
        |c| {
            c.spec.instances = Some(2);
            c.spec.patroni.as_mut().unwrap().synchronous_mode = Some(SynchronousMode::Strict);
        },
        "strict with 2 instances",
    );
    warns(
        |c| c.spec.patroni.as_mut().unwrap().failsafe_mode = Some(false),
        "spec.patroni.failsafeMode: false: while the Kubernetes API is unreachable",
    );
    warns(
        |c| c.spec.network_policy.as_mut().unwrap().enabled = Some(false),
        "spec.networkPolicy.enabled: false: any pod that reaches the instances may call Patroni's API",
    );
    // One node may hold the primary and its synchronous standby: losing it loses what
    // synchronous replication promised.
    let preferred = |c: &mut PostgresCluster| {
        c.spec.scheduling.as_mut().unwrap().anti_affinity = Some(AntiAffinity::Preferred)
    };
    warns(
        preferred,
        "spec.scheduling.antiAffinity: preferred with synchronousMode sync: the scheduler may put the primary and its synchronous standby on one node",
    );
    warns(
        |c| {
            preferred(c);
            c.spec.patroni.as_mut().unwrap().synchronous_mode = Some(SynchronousMode::Strict);
        },
        "losing that node stops writes until another standby is named",
    );
    let mut quiet = base();
    preferred(&mut quiet);
    quiet.spec.patroni.as_mut().unwrap().synchronous_mode = Some(SynchronousMode::Async);
    assert!(
        !validate(&quiet, None)
            .warnings
            .iter()
            .any(|w| w.contains("antiAffinity")),
        "async does not promise what one node could break"
    );
}

// users and databases

fn user(name: &str, options: &[&str], databases: &[&str]) -> User {
    User {
        name: name.into(),
        options: Some(options.iter().map(|s| s.to_string()).collect()),
        databases: Some(databases.iter().map(|s| s.to_string()).collect()),
    }
}

#[test]
fn user_names() {
    let p = "spec.users[0].name";
    rejects(
        |c| c.spec.users = Some(vec![user("App", &["LOGIN"], &[])]),
        p,
        "lower-case letters",
    );
    rejects(
        |c| c.spec.users = Some(vec![user("a-b", &["LOGIN"], &[])]),
        p,
        "lower-case letters",
    );
    rejects(
        |c| c.spec.users = Some(vec![user(&"a".repeat(64), &["LOGIN"], &[])]),
        p,
        "at most 63",
    );
    for reserved in ["postgres", "pg_monitor", "pgpilot_pooler", "public"] {
        rejects(
            |c| c.spec.users = Some(vec![user(reserved, &["LOGIN"], &[])]),
            p,
            "reserved",
        );
    }
    rejects(
        |c| c.spec.users = Some(vec![user("app_", &["LOGIN"], &[])]),
        p,
        "must not end with '_'",
    );
    rejects(
        |c| {
            c.spec.users = Some(vec![
                user("app", &["LOGIN"], &[]),
                user("app", &["LOGIN"], &[]),
            ])
        },
        "spec.users[1].name",
        "Duplicate value: \"app\"",
    );
}

#[test]
fn user_options() {
    fn u(opts: &'static [&'static str]) -> impl FnOnce(&mut PostgresCluster) {
        move |c| c.spec.users = Some(vec![user("app", opts, &[])])
    }
    rejects(
        u(&["LOGIN", "PASSWORD 'x'"]),
        "spec.users[0].options[1]",
        "passwords are generated",
    );
    rejects(
        u(&["LOGIN", "LOGIN; DROP TABLE x"]),
        "spec.users[0].options[1]",
        "Unsupported value",
    );
    rejects(
        u(&["LOGIN", "NOLOGIN"]),
        "spec.users[0].options[1]",
        "contradicts LOGIN",
    );
    rejects(
        u(&["LOGIN", "login"]),
        "spec.users[0].options[1]",
        "Duplicate value",
    );
    rejects(
        u(&["LOGIN", "CONNECTION LIMIT many"]),
        "spec.users[0].options[1]",
        "CONNECTION LIMIT needs a whole number",
    );
    warns(u(&["LOGIN", "SUPERUSER"]), "superuser bypasses");
    warns(u(&["CREATEDB"]), "no LOGIN option");
    let mut c = base();
    u(&["login", "connection   limit 5", "NOINHERIT"])(&mut c);
    assert_eq!(errors(&c, None), Vec::<String>::new());
}

#[test]
fn user_databases_must_exist() {
    rejects(
        |c| c.spec.users = Some(vec![user("app", &["LOGIN"], &["shop"])]),
        "spec.users[0].databases[0]",
        "Not found: \"shop\"",
    );
    rejects(
        |c| {
            c.spec.databases = Some(vec![Database {
                name: "shop".into(),
                owner: Some("postgres".into()),
            }]);
            c.spec.users = Some(vec![user("app", &["LOGIN"], &["shop", "shop"])]);
        },
        "spec.users[0].databases[1]",
        "Duplicate",
    );
}

#[test]
fn databases() {
    let db = |name: &str, owner: &str| Database {
        name: name.into(),
        owner: Some(owner.into()),
    };
    rejects(
        |c| c.spec.databases = Some(vec![db("Shop", "postgres")]),
        "spec.databases[0].name",
        "lower-case",
    );
    rejects(
        |c| c.spec.databases = Some(vec![db("template1", "postgres")]),
        "spec.databases[0].name",
        "already exists",
    );
    rejects(
        |c| c.spec.databases = Some(vec![db("shop", "postgres"), db("shop", "postgres")]),
        "spec.databases[1].name",
        "Duplicate",
    );
    rejects(
        |c| c.spec.databases = Some(vec![db("shop", "nobody")]),
        "spec.databases[0].owner",
        "Not found: \"nobody\"",
    );
}

// backup

#[test]
fn repositories() {
    let rp = "spec.backup.pgbackrest.repos[0]";
    rejects(
        |c| repo(c).name = "repo5".into(),
        &format!("{rp}.name"),
        "Unsupported value: \"repo5\"",
    );
    rejects(
        |c| repo(c).volume = None,
        rp,
        "Required value: one of s3, gcs, azure or volume",
    );
    rejects(
        |c| {
            repo(c).gcs = Some(GcsRepo {
                bucket: "b".into(),
                credentials_secret: None,
            })
        },
        rp,
        "only one of",
    );
    rejects(
        |c| repo(c).volume.as_mut().unwrap().size = None,
        &format!("{rp}.volume.size"),
        "needs a size",
    );
    rejects(
        |c| repo(c).volume.as_mut().unwrap().size = Some(Quantity("1Mi".into())),
        &format!("{rp}.volume.size"),
        "at least 1Gi",
    );
    rejects(
        |c| {
            let r = repo(c).clone();
            c.spec
                .backup
                .as_mut()
                .unwrap()
                .pgbackrest
                .as_mut()
                .unwrap()
                .repos
                .as_mut()
                .unwrap()
                .push(r);
        },
        "spec.backup.pgbackrest.repos[1].name",
        "Duplicate",
    );
    rejects_among(
        |c| {
            let r = repo(c).clone();
            let repos = c
                .spec
                .backup
                .as_mut()
                .unwrap()
                .pgbackrest
                .as_mut()
                .unwrap()
                .repos
                .as_mut()
                .unwrap();
            for n in 2..=5 {
                repos.push(BackupRepo {
                    name: format!("repo{n}"),
                    ..r.clone()
                });
            }
            repos[4].name = "repo1".into();
        },
        "spec.backup.pgbackrest.repos",
        "Too many: 5",
    );
    warns(
        |c| {
            c.spec
                .backup
                .as_mut()
                .unwrap()
                .pgbackrest
                .as_mut()
                .unwrap()
                .repos = Some(vec![])
        },
        "no backup repository",
    );
}

#[test]
fn object_store_repositories() {
    let s3 = |c: &mut PostgresCluster| {
        repo(c).volume = None;
        repo(c).s3 = Some(S3Repo {
            bucket: "my-bucket".into(),
            endpoint: "s3.amazonaws.com".into(),
            region: "us-east-1".into(),
            uri_style: Some(S3UriStyle::Host),
            credentials_secret: Some("creds".into()),
            ca_secret: None,
        });
    };
    let rp = "spec.backup.pgbackrest.repos[0].s3";
    rejects(
        |c| {
            s3(c);
            repo(c).s3.as_mut().unwrap().bucket = "B".into()
        },
        &format!("{rp}.bucket"),
        "S3 bucket name",
    );
    rejects(
        |c| {
            s3(c);
            repo(c).s3.as_mut().unwrap().endpoint = "https://s3.amazonaws.com".into()
        },
        &format!("{rp}.endpoint"),
        "without a scheme",
    );
    rejects(
        |c| {
            s3(c);
            repo(c).s3.as_mut().unwrap().endpoint = "minio:99999".into()
        },
        &format!("{rp}.endpoint"),
        "host name",
    );
    rejects(
        |c| {
            s3(c);
            repo(c).s3.as_mut().unwrap().region = String::new()
        },
        &format!("{rp}.region"),
        "region",
    );
    rejects(
        |c| {
            s3(c);
            repo(c).s3.as_mut().unwrap().credentials_secret = Some("_x".into())
        },
        &format!("{rp}.credentialsSecret"),
        "Secret name",
    );
    rejects(
        |c| {
            s3(c);
            repo(c).s3.as_mut().unwrap().ca_secret = Some("Minio CA".into())
        },
        &format!("{rp}.caSecret"),
        "Secret name",
    );
    warns(
        |c| {
            s3(c);
            repo(c).s3.as_mut().unwrap().bucket = "backups.example.com".into()
        },
        "uriStyle: path avoids that",
    );
    let path_style = |c: &mut PostgresCluster| {
        s3(c);
        let s3 = repo(c).s3.as_mut().unwrap();
        s3.bucket = "backups.example.com".into();
        s3.uri_style = Some(S3UriStyle::Path);
    };
    let mut c = base();
    path_style(&mut c);
    let out = validate(&c, None);
    assert_eq!((out.errors, out.warnings), (vec![], vec![]));
    let az = |c: &mut PostgresCluster| {
        repo(c).volume = None;
        repo(c).azure = Some(AzureRepo {
            account: "Acct".into(),
            container: "backups".into(),
            credentials_secret: "az".into(),
        });
    };
    rejects(
        az,
        "spec.backup.pgbackrest.repos[0].azure.account",
        "storage account",
    );
    let gcs = |c: &mut PostgresCluster| {
        repo(c).volume = None;
        repo(c).gcs = Some(GcsRepo {
            bucket: "a/b".into(),
            credentials_secret: None,
        });
    };
    rejects(
        gcs,
        "spec.backup.pgbackrest.repos[0].gcs.bucket",
        "bucket name",
    );
}

#[test]
fn schedules_and_retention() {
    let sp = "spec.backup.pgbackrest.repos[0].schedules";
    rejects(
        |c| repo(c).schedules.as_mut().unwrap().full = Some("0 25 * * *".into()),
        &format!("{sp}.full"),
        "hour field",
    );
    rejects(
        |c| repo(c).schedules.as_mut().unwrap().incremental = Some("hourly".into()),
        &format!("{sp}.incremental"),
        "must have 5 fields",
    );
    rejects(
        |c| repo(c).retention.as_mut().unwrap().full = Some(0),
        "spec.backup.pgbackrest.repos[0].retention.full",
        "between 1 and 9999999",
    );
    warns(
        |c| repo(c).schedules = Some(BackupSchedules::default()),
        "only WAL is archived",
    );
    warns(
        |c| repo(c).schedules.as_mut().unwrap().full = None,
        "no full backup schedule",
    );
}

// pooler, exporter, tls, scheduling, service

#[test]
fn pooler() {
    let on = |c: &mut PostgresCluster| {
        let s = resolve(
            &PostgresClusterSpec {
                pooler: Some(PoolerSpec {
                    enabled: Some(true),
                    ..Default::default()
                }),
                ..c.spec.clone()
            },
            None,
            &Config::default(),
        );
        c.spec = s;
    };
    rejects(
        |c| {
            on(c);
            c.spec.pooler.as_mut().unwrap().instances = Some(0)
        },
        "spec.pooler.instances",
        "between 1 and 32",
    );
    rejects(
        |c| {
            on(c);
            c.spec.pooler.as_mut().unwrap().max_client_connections = Some(0)
        },
        "spec.pooler.maxClientConnections",
        "between 1",
    );
    rejects(
        |c| {
            on(c);
            c.spec.pooler.as_mut().unwrap().default_pool_size = Some(100)
        },
        "spec.pooler.defaultPoolSize",
        "less than max_connections (100)",
    );
    rejects(
        |c| {
            on(c);
            c.spec.pooler.as_mut().unwrap().image = Some("x y".into())
        },
        "spec.pooler.image",
        "image reference",
    );
    warns(
        |c| {
            on(c);
            c.spec.pooler.as_mut().unwrap().mode = Some(PoolMode::Statement)
        },
        "statement pooling",
    );
}

#[test]
fn exporter() {
    rejects(
        |c| exporter_of(c).port = Some(8008),
        "spec.monitoring.exporter.port",
        "used by PostgreSQL, Patroni or pgBackRest",
    );
    rejects(
        |c| exporter_of(c).port = Some(80),
        "spec.monitoring.exporter.port",
        "between 1024 and 65535",
    );
}

#[test]
fn tls() {
    let issuer = |kind: &str| IssuerRef {
        name: "ca".into(),
        kind: Some(kind.into()),
        group: Some("cert-manager.io".into()),
    };
    rejects(
        |c| c.spec.tls.as_mut().unwrap().issuer_ref = Some(issuer("Issuer")),
        "spec.tls.secretName",
        "together with issuerRef",
    );
    rejects_among(
        |c| c.spec.tls = Some(TlsSpec::default()),
        "spec.tls",
        "one of issuerRef or secretName",
    );
    rejects(
        |c| {
            c.spec.tls = Some(TlsSpec {
                issuer_ref: Some(issuer("Vault")),
                secret_name: None,
            })
        },
        "spec.tls.issuerRef.kind",
        "Unsupported value: \"Vault\"",
    );
    rejects(
        |c| c.spec.tls.as_mut().unwrap().secret_name = Some("A".into()),
        "spec.tls.secretName",
        "Secret name",
    );
    warns(
        |c| {
            c.spec.tls = None;
            hba(c, &["host replication all all scram-sha-256"])
        },
        "no TLS",
    );
}

#[test]
fn scheduling() {
    let sp = "spec.scheduling";
    rejects(
        |c| {
            c.spec.scheduling.as_mut().unwrap().node_selector =
                Some(BTreeMap::from([("bad key!".into(), "x".into())]))
        },
        &format!("{sp}.nodeSelector[bad key!]"),
        "label key",
    );
    rejects(
        |c| {
            c.spec.scheduling.as_mut().unwrap().node_selector =
                Some(BTreeMap::from([("disk".into(), "-ssd".into())]))
        },
        &format!("{sp}.nodeSelector[disk]"),
        "label value",
    );
    let tol = |op: &str, value: Option<&str>, effect: &str, secs: Option<i64>| Toleration {
        key: Some("dedicated".into()),
        operator: Some(op.into()),
        value: value.map(Into::into),
        effect: Some(effect.into()),
        toleration_seconds: secs,
    };
    rejects(
        |c| {
            c.spec.scheduling.as_mut().unwrap().tolerations =
                Some(vec![tol("Maybe", None, "NoSchedule", None)])
        },
        &format!("{sp}.tolerations[0].operator"),
        "Unsupported value",
    );
    rejects(
        |c| {
            c.spec.scheduling.as_mut().unwrap().tolerations =
                Some(vec![tol("Exists", Some("db"), "NoSchedule", None)])
        },
        &format!("{sp}.tolerations[0].value"),
        "must be empty",
    );
    rejects(
        |c| {
            c.spec.scheduling.as_mut().unwrap().tolerations =
                Some(vec![tol("Equal", Some("db"), "Sometimes", None)])
        },
        &format!("{sp}.tolerations[0].effect"),
        "Unsupported value",
    );
    rejects(
        |c| {
            c.spec.scheduling.as_mut().unwrap().tolerations =
                Some(vec![tol("Equal", Some("db"), "NoSchedule", Some(5))])
        },
        &format!("{sp}.tolerations[0].tolerationSeconds"),
        "NoExecute",
    );
    let tsc = |skew: i32, key: &str, when: &str| TopologySpreadConstraint {
        max_skew: skew,
        topology_key: key.into(),
        when_unsatisfiable: when.into(),
        ..Default::default()
    };
    rejects(
        |c| {
            c.spec
                .scheduling
                .as_mut()
                .unwrap()
                .topology_spread_constraints = Some(vec![tsc(0, "zone", "DoNotSchedule")])
        },
        &format!("{sp}.topologySpreadConstraints[0].maxSkew"),
        "at least 1",
    );
    rejects(
        |c| {
            c.spec
                .scheduling
                .as_mut()
                .unwrap()
                .topology_spread_constraints = Some(vec![tsc(1, "", "DoNotSchedule")])
        },
        &format!("{sp}.topologySpreadConstraints[0].topologyKey"),
        "node label key",
    );
    rejects(
        |c| {
            c.spec
                .scheduling
                .as_mut()
                .unwrap()
                .topology_spread_constraints = Some(vec![tsc(1, "zone", "Always")])
        },
        &format!("{sp}.topologySpreadConstraints[0].whenUnsatisfiable"),
        "Unsupported value",
    );
    rejects(
        |c| c.spec.scheduling.as_mut().unwrap().priority_class_name = Some("High!".into()),
        &format!("{sp}.priorityClassName"),
        "PriorityClass",
    );
}

#[test]
fn service() {
    let sp = "spec.service";
    rejects(
        |c| {
            c.spec.service.as_mut().unwrap().load_balancer_source_ranges =
                Some(vec!["10.0.0.0/8".into()])
        },
        &format!("{sp}.loadBalancerSourceRanges"),
        "only applies to type LoadBalancer",
    );
    rejects(
        |c| {
            let s = c.spec.service.as_mut().unwrap();
            s.type_ = Some(ServiceType::LoadBalancer);
            s.load_balancer_source_ranges = Some(vec!["10.0.0.0/33".into()]);
        },
        &format!("{sp}.loadBalancerSourceRanges[0]"),
        "CIDR",
    );
    rejects(
        |c| c.spec.network_policy.as_mut().unwrap().operator_namespace = Some("Ops_NS".into()),
        "spec.networkPolicy.operatorNamespace",
        "must be a namespace name",
    );
    rejects(
        |c| {
            c.spec.service.as_mut().unwrap().annotations =
                Some(BTreeMap::from([("/x".into(), "y".into())]))
        },
        &format!("{sp}.annotations[/x]"),
        "qualified name",
    );
}

#[test]
fn single_instance_warns() {
    warns(
        |c| {
            c.spec.instances = Some(1);
            c.spec.patroni.as_mut().unwrap().synchronous_mode = Some(SynchronousMode::Async);
        },
        "a single instance has no failover",
    );
}

// updates

#[track_caller]
fn rejects_update(change: impl FnOnce(&mut PostgresCluster), path: &str, gist: &str) {
    let old = base();
    let mut new = old.clone();
    change(&mut new);
    let errs = validate(&new, Some(&old)).errors;
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert_eq!(errs[0].path, path);
    assert!(errs[0].to_string().contains(gist), "{}", errs[0]);
}

#[test]
fn update_rules() {
    rejects_update(
        |c| c.spec.postgres_version = Some(17),
        "spec.postgresVersion",
        "cannot change from 18 to 17",
    );
    rejects_update(
        |c| c.spec.storage.size = Quantity("5Gi".into()),
        "spec.storage.size",
        "cannot shrink from 10Gi to 5Gi",
    );
    rejects_update(
        |c| c.spec.storage.storage_class_name = Some("fast".into()),
        "spec.storage.storageClassName",
        "immutable (was null",
    );
    rejects_update(
        |c| repo(c).volume.as_mut().unwrap().size = Some(Quantity("9Gi".into())),
        "spec.backup.pgbackrest.repos[0].volume.size",
        "cannot shrink",
    );
    rejects_update(
        |c| {
            repo(c).volume = None;
            repo(c).gcs = Some(GcsRepo {
                bucket: "b".into(),
                credentials_secret: None,
            });
        },
        "spec.backup.pgbackrest.repos[0]",
        "cannot move from volume to gcs",
    );
}

#[test]
fn a_renamed_object_store_repository_is_rejected() {
    let mut old = base();
    repo(&mut old).volume = None;
    repo(&mut old).gcs = Some(GcsRepo {
        bucket: "b".into(),
        credentials_secret: None,
    });
    let mut new = old.clone();
    repo(&mut new).name = "repo2".into();
    let errs = errors(&new, Some(&old));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("spec.backup.pgbackrest.repos[0].name: Invalid value: \"repo2\": this repository was named \"repo1\""), "{}", errs[0]);
}

#[test]
fn allowed_updates() {
    let old = base();
    let mut new = old.clone();
    new.spec.storage.size = Quantity("20Gi".into());
    new.spec.image = Some("ghcr.io/pgpilot/postgres:18.2".into());
    new.spec.instances = Some(2);
    assert_eq!(errors(&new, Some(&old)), Vec::<String>::new());
}

// restart warnings on update

/// The warnings of an UPDATE of `base()` by `change`, resolved against the stored spec as
/// the webhook resolves it before validating.
#[track_caller]
fn update_warnings(change: impl FnOnce(&mut PostgresClusterSpec)) -> Vec<String> {
    let old = base();
    let mut spec = old.spec.clone();
    change(&mut spec);
    let new = PostgresCluster::new("demo", resolve(&spec, Some(&old.spec), &Config::default()));
    let out = validate(&new, Some(&old));
    let errs: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errs, Vec::<String>::new());
    out.warnings
}

fn spec_param(s: &mut PostgresClusterSpec, k: &str, v: &str) {
    let params = s.postgresql.as_mut().unwrap().parameters.as_mut().unwrap();
    params.insert(k.into(), v.into());
}

const REPLICAS_FIRST: &str =
    "takes effect after a restart of every instance; replicas restart first, then the primary";

#[test]
fn a_raised_restart_parameter_restarts_replicas_first() {
    assert_eq!(
        update_warnings(|s| spec_param(s, "max_connections", "200")),
        [format!(
            "spec.postgresql.parameters[max_connections]: changed from 100 to 200: {REPLICAS_FIRST}"
        )]
    );
}

#[test]
fn a_lowered_hot_standby_minimum_restarts_the_primary_first() {
    assert_eq!(
        update_warnings(|s| spec_param(s, "max_connections", "50")),
        [
            "spec.postgresql.parameters[max_connections]: changed from 100 to 50: takes effect after a restart of every instance; the primary restarts first, then the replicas: a standby cannot run with a lower value than its primary"
        ]
    );
}

#[test]
fn a_lowered_ordinary_restart_parameter_restarts_replicas_first() {
    assert_eq!(
        update_warnings(|s| spec_param(s, "shared_buffers", "128MB")),
        [format!(
            "spec.postgresql.parameters[shared_buffers]: changed from 256MB to 128MB: {REPLICAS_FIRST}"
        )]
    );
}

#[test]
fn the_same_amount_in_other_units_is_no_change() {
    assert_eq!(
        update_warnings(|s| spec_param(s, "shared_buffers", "262144kB")),
        Vec::<String>::new()
    );
}

#[test]
fn a_reloadable_parameter_change_needs_no_warning() {
    assert_eq!(
        update_warnings(|s| spec_param(s, "work_mem", "16MB")),
        Vec::<String>::new()
    );
}

#[test]
fn derived_restart_parameters_warn_when_their_inputs_change() {
    // WAL senders and slots follow the instance count: 10 up to 6 instances, then one more
    // per instance.
    assert_eq!(
        update_warnings(|s| s.instances = Some(8)),
        [
            format!(
                "spec.postgresql.parameters[max_replication_slots]: changed from 10 to 12: {REPLICAS_FIRST}"
            ),
            format!(
                "spec.postgresql.parameters[max_wal_senders]: changed from 10 to 12: {REPLICAS_FIRST}"
            ),
        ]
    );
    // Memory retunes shared_buffers and max_connections; the rest of the tuning reloads.
    let memory = |s: &mut PostgresClusterSpec| {
        let r = s.resources.as_mut().unwrap();
        r.requests
            .as_mut()
            .unwrap()
            .insert("memory".into(), Quantity("4Gi".into()));
    };
    assert_eq!(
        update_warnings(memory),
        [
            format!(
                "spec.postgresql.parameters[max_connections]: changed from 100 to 256: {REPLICAS_FIRST}"
            ),
            format!(
                "spec.postgresql.parameters[shared_buffers]: changed from 256MB to 1024MB: {REPLICAS_FIRST}"
            ),
        ]
    );
}

#[test]
fn added_and_removed_restart_parameters_warn() {
    let old = base();
    let mut new = old.clone();
    set_param(&mut new, "max_prepared_transactions", "10");
    assert_eq!(
        validate(&new, Some(&old)).warnings,
        [format!(
            "spec.postgresql.parameters[max_prepared_transactions]: set to 10: {REPLICAS_FIRST}"
        )]
    );
    assert_eq!(
        validate(&old, Some(&new)).warnings,
        [format!(
            "spec.postgresql.parameters[max_prepared_transactions]: removed (was 10): {REPLICAS_FIRST}"
        )]
    );
}

#[test]
fn values_that_are_not_plain_tokens_are_quoted() {
    assert_eq!(
        update_warnings(|s| spec_param(
            s,
            "shared_preload_libraries",
            "pg_stat_statements, auto_explain"
        )),
        [format!(
            "spec.postgresql.parameters[shared_preload_libraries]: changed from pg_stat_statements to \"pg_stat_statements, auto_explain\": {REPLICAS_FIRST}"
        )]
    );
}

#[test]
fn no_restart_warning_on_create() {
    let mut c = base();
    set_param(&mut c, "max_connections", "200");
    assert_eq!(validate(&c, None).warnings, Vec::<String>::new());
}

#[test]
fn unknown_parameters_get_no_restart_warning() {
    assert_eq!(
        update_warnings(|s| {
            spec_param(s, "pg_stat_statements.max", "10000");
            spec_param(s, "no_such_setting", "1");
        }),
        Vec::<String>::new()
    );
}

#[test]
fn contexts_are_those_of_the_running_major() {
    // autovacuum_max_workers needs a restart up to PostgreSQL 17 and reloads from 18.
    let change = |version: i32| {
        let mut old = base();
        old.spec.postgres_version = Some(version);
        let mut new = old.clone();
        set_param(&mut new, "autovacuum_max_workers", "5");
        validate(&new, Some(&old)).warnings
    };
    assert_eq!(
        change(17),
        [format!(
            "spec.postgresql.parameters[autovacuum_max_workers]: set to 5: {REPLICAS_FIRST}"
        )]
    );
    assert_eq!(change(18), Vec::<String>::new());
}

#[test]
fn parameter_names_compare_case_insensitively() {
    let mut old = base();
    set_param(&mut old, "max_prepared_transactions", "10");
    let mut new = base();
    set_param(&mut new, "MAX_PREPARED_TRANSACTIONS", "10");
    // The upper-case name is an error of its own; as PostgreSQL reads it, nothing changed.
    assert_eq!(validate(&new, Some(&old)).warnings, Vec::<String>::new());
}

#[test]
fn synchronous_replication_switched_on_needs_no_warning() {
    let mut old = base();
    old.spec.instances = Some(2);
    old.spec.patroni.as_mut().unwrap().synchronous_mode = Some(SynchronousMode::Async);
    let mut new = old.clone();
    new.spec.patroni.as_mut().unwrap().synchronous_mode = Some(SynchronousMode::Sync);
    assert_eq!(validate(&new, Some(&old)), Outcome::default());
}

// the operator's policy

#[test]
fn the_operator_policy_limits_images_and_priority_classes() {
    let mut config = Config::default();
    config.policy.allowed_images = Some(vec![
        "ghcr.io/pgpilot/".into(),
        "quay.io/prometheuscommunity/postgres-exporter".into(),
    ]);
    config.policy.allowed_priority_classes = Some(vec!["database".into()]);
    let policy_errors = |c: &PostgresCluster| -> Vec<String> {
        validate_with(c, None, &config)
            .errors
            .iter()
            .map(ToString::to_string)
            .filter(|e| e.contains("policy"))
            .collect()
    };
    // The defaults pass: the catalog is under the allowed prefixes.
    assert_eq!(policy_errors(&base()), Vec::<String>::new());

    let mut c = base();
    c.spec.image = Some("docker.io/someone/postgres:17.2".into());
    c.spec.scheduling.as_mut().unwrap().priority_class_name = Some("system-node-critical".into());
    // An exact repository entry does not admit a longer name that starts like it.
    exporter_of(&mut c).image =
        Some("quay.io/prometheuscommunity/postgres-exporter-fork:v1".into());
    assert_eq!(
        policy_errors(&c),
        [
            "spec.image: Forbidden: \"docker.io/someone/postgres:17.2\" is not allowed by the operator's policy (allowedImages: ghcr.io/pgpilot/, quay.io/prometheuscommunity/postgres-exporter)",
            "spec.monitoring.exporter.image: Forbidden: \"quay.io/prometheuscommunity/postgres-exporter-fork:v1\" is not allowed by the operator's policy (allowedImages: ghcr.io/pgpilot/, quay.io/prometheuscommunity/postgres-exporter)",
            "spec.scheduling.priorityClassName: Forbidden: \"system-node-critical\" is not allowed by the operator's policy (allowedPriorityClasses: database)",
        ]
    );
    // A tag or a digest of an allowed repository, and no priority class, pass.
    let mut ok = base();
    exporter_of(&mut ok).image =
        Some("quay.io/prometheuscommunity/postgres-exporter@sha256:0123".into());
    ok.spec.scheduling.as_mut().unwrap().priority_class_name = None;
    assert_eq!(policy_errors(&ok), Vec::<String>::new());
    // Without a policy, anything goes.
    assert!(
        validate_with(&c, None, &Config::default())
            .errors
            .iter()
            .all(|e| !e.to_string().contains("policy"))
    );
}

#[test]
fn a_policy_that_refuses_the_catalog_is_a_configuration_error() {
    let err = Config::from_yaml("policy: {allowedImages: [registry.example.com/]}").unwrap_err();
    assert!(
        err.contains("policy.allowedImages does not allow the catalog's image"),
        "{err}"
    );
    let images = "registry.example.com/";
    let yaml = format!(
        "postgres: {{images: {{14: {images}pg:14, 15: {images}pg:15, 16: {images}pg:16, 17: {images}pg:17, 18: {images}pg:18}}}}\n\
         backup: {{image: {images}pgbackrest:2}}\npooler: {{image: {images}pgbouncer:1}}\nexporter: {{image: {images}exporter:1}}\n\
         policy: {{allowedImages: [{images}]}}"
    );
    Config::from_yaml(&yaml).unwrap();
}

/// `base()` created from a backup: `restore` is the YAML of `spec.bootstrap.restore`,
/// resolved as admission would.
fn restoring(restore: &str) -> PostgresCluster {
    let mut spec = base().spec;
    spec.bootstrap = Some(BootstrapSpec {
        restore: Some(serde_yaml::from_str(restore).unwrap()),
    });
    PostgresCluster::new("demo", resolve(&spec, None, &Config::default()))
}

#[track_caller]
fn restore_rejected(restore: &str, path: &str, gist: &str) {
    let errs = validate(&restoring(restore), None).errors;
    assert!(
        errs.iter()
            .any(|e| e.path == path && e.to_string().contains(gist)),
        "no {gist:?} at {path} in {:#?}",
        errs.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
}

#[test]
fn a_restore_resolves_to_explicit_options_and_is_announced() {
    let c = restoring(
        "{cluster: src, repo: repo1, target: {type: time, value: '2026-12-01T10:00:00+01:00'}}",
    );
    let r = c.spec.bootstrap.as_ref().unwrap().restore.as_ref().unwrap();
    let options = r.options.as_ref().unwrap();
    assert_eq!(options["type"], "time");
    assert_eq!(options["target"], "2026-12-01 09:00:00+00");
    assert_eq!(options["target-action"], "promote");
    assert_eq!(options["target-exclusive"], "n");
    assert_eq!(r.target.as_ref().unwrap().exclusive, Some(false));
    let outcome = validate(&c, None);
    assert!(outcome.is_valid(), "{:?}", outcome.errors);
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("Job demo-restore restores it")),
        "{:?}",
        outcome.warnings
    );
    // The default target is the end of the archive.
    let latest = restoring("{cluster: src, repo: repo2}");
    let r = latest.spec.bootstrap.unwrap().restore.unwrap();
    assert_eq!(
        r.options.unwrap(),
        BTreeMap::from([("type".to_owned(), "default".to_owned())])
    );
    // Resolving again changes nothing.
    assert_eq!(resolve(&c.spec, None, &Config::default()), c.spec);
}

#[test]
fn restore_targets_say_exactly_one_thing() {
    let p = "spec.bootstrap.restore.target";
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: time, value: '2026-12-01 10:00:00'}}",
        &format!("{p}.value"),
        "with an offset",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: time}}",
        &format!("{p}.value"),
        "needs its value",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: latest, value: '0/3000000'}}",
        &format!("{p}.value"),
        "takes no value",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: lsn, value: '3000000'}}",
        &format!("{p}.value"),
        "WAL location",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: xid, value: 'abc'}}",
        &format!("{p}.value"),
        "transaction ID",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: time, value: '2026-12-01T10:00:00Z', set: 20261201-090000F}}",
        &format!("{p}.set"),
        "type immediate only",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: immediate, set: newest}}",
        &format!("{p}.set"),
        "backup label",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: name, value: before, exclusive: true}}",
        &format!("{p}.exclusive"),
        "time, lsn and xid",
    );
    let ok = restoring(
        "{cluster: src, repo: repo1, target: {type: immediate, set: 20261201-090000F_20261201-100000I}}",
    );
    assert!(validate(&ok, None).is_valid());
}

#[test]
fn restore_sources_and_options_pgpilot_owns() {
    let p = "spec.bootstrap.restore";
    restore_rejected("{cluster: src, repo: repo5}", &format!("{p}.repo"), "repo1");
    restore_rejected(
        "{cluster: demo, repo: repo1}",
        &format!("{p}.cluster"),
        "its own backups",
    );
    restore_rejected(
        "{cluster: Src_1, repo: repo1}",
        &format!("{p}.cluster"),
        "cluster name",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, repository: {}}",
        &format!("{p}.repository"),
        "one of s3, gcs or azure",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, repository: {gcs: {bucket: b}, azure: {account: acct, container: backups, credentialsSecret: k}}}",
        &format!("{p}.repository"),
        "only one of",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, repository: {s3: {bucket: B, endpoint: 'https://s3', region: eu}}}",
        &format!("{p}.repository.s3.bucket"),
        "S3 bucket name",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, options: {stanza: other}}",
        &format!("{p}.options[stanza]"),
        "pgpilot sets",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, options: {repo1-path: /elsewhere}}",
        &format!("{p}.options[repo1-path]"),
        "pgpilot sets",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, options: {process-max: '4'}}",
        &format!("{p}.options[process-max]"),
        "supported values",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, target: {type: time, value: '2026-12-01T10:00:00Z'}, options: {type: xid}}",
        &format!("{p}.options[type]"),
        "as the target says",
    );
    restore_rejected(
        "{cluster: src, repo: repo1, options: {target-exclusive: 'y'}}",
        &format!("{p}.options[target-exclusive]"),
        "does not apply",
    );
    let ok = restoring("{cluster: src, repo: repo1, options: {target-timeline: current}}");
    assert!(
        validate(&ok, None).is_valid(),
        "{:?}",
        validate(&ok, None).errors
    );
}

#[test]
fn bootstrap_cannot_change_after_creation() {
    let old = restoring("{cluster: src, repo: repo1}");
    let mut new = old.clone();
    new.spec.bootstrap = None;
    let errs = errors(&new, Some(&old));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.bootstrap: Forbidden")),
        "{errs:?}"
    );
    let mut later = base();
    later.spec.bootstrap = old.spec.bootstrap.clone();
    assert!(
        errors(&later, Some(&base()))
            .iter()
            .any(|e| e.contains("immutable"))
    );
    // Unchanged, it is quiet on updates: the warning is for the create.
    assert!(
        validate(&old, Some(&old))
            .warnings
            .iter()
            .all(|w| !w.contains("restores it"))
    );
}

/// `base()` as stored, and the same cluster asking for `restore` (YAML of `spec.restore`).
fn restore_request(restore: &str) -> (PostgresCluster, PostgresCluster) {
    let old = base();
    let mut spec = old.spec.clone();
    spec.restore = Some(serde_yaml::from_str(restore).unwrap());
    let new = PostgresCluster::new("demo", resolve(&spec, Some(&old.spec), &Config::default()));
    (old, new)
}

#[test]
fn an_in_place_restore_needs_a_stored_cluster_and_one_of_its_repositories() {
    let (old, new) =
        restore_request("{id: one, repo: repo1, target: {type: lsn, value: '0/3000060'}}");
    let outcome = validate(&new, Some(&old));
    assert!(outcome.is_valid(), "{:?}", outcome.errors);
    assert!(
        outcome
            .warnings
            .iter()
            .any(|w| w.contains("replaces the data of every instance"))
    );
    assert!(
        errors(&new, None)
            .iter()
            .any(|e| e.starts_with("spec.restore: Forbidden"))
    );
    let (old, new) = restore_request("{id: one, repo: repo3}");
    assert!(
        errors(&new, Some(&old))
            .iter()
            .any(|e| e.contains("spec.restore.repo") && e.contains("(repo1)")),
    );
}

#[test]
fn an_in_place_restore_runs_once_per_id_and_one_at_a_time() {
    let (mut old, new) = restore_request("{id: one, repo: repo1}");
    // Stored with that id: the same request again is quiet, another target is refused.
    old.spec.restore = new.spec.restore.clone();
    assert!(validate(&new, Some(&old)).is_valid());
    assert!(
        validate(&new, Some(&old))
            .warnings
            .iter()
            .all(|w| !w.contains("replaces"))
    );
    let (_, other) = restore_request("{id: one, repo: repo1, target: {type: name, value: before}}");
    assert!(
        errors(&other, Some(&old))
            .iter()
            .any(|e| e.contains("spec.restore.id: Forbidden") && e.contains("new id"))
    );
    // A new id while the last one runs is refused.
    old.status = Some(PostgresClusterStatus {
        restore: Some(RestoreStatus {
            id: "one".into(),
            phase: "Restoring".into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (_, next) = restore_request("{id: two, repo: repo1}");
    assert!(
        errors(&next, Some(&old))
            .iter()
            .any(|e| e.contains("is running (Restoring)"))
    );
}

#[test]
fn a_time_no_listed_backup_ended_before_is_refused() {
    let (mut old, new) = restore_request(
        "{id: one, repo: repo1, target: {type: time, value: '2026-12-01T10:00:00Z'}}",
    );
    let listed = |stop: &str| {
        Some(PostgresClusterStatus {
            backups: Some(BackupInventory {
                repos: vec![RepoInventory {
                    name: "repo1".into(),
                    backups: vec![BackupEntry {
                        label: "20261201-095959F".into(),
                        type_: "full".into(),
                        stop: Some(stop.into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    // Ended in the same second: pgBackRest compares whole seconds.
    old.status = listed("2026-12-01T10:00:00.4Z");
    assert!(
        errors(&new, Some(&old))
            .iter()
            .any(|e| e.contains("no backup in repo1 ended before this time")),
    );
    old.status = listed("2026-12-01T09:59:59Z");
    assert!(validate(&new, Some(&old)).is_valid());
}

#[test]
fn a_restore_source_found_at_admission_must_have_the_repository_and_the_major() {
    let c = restoring("{cluster: src, repo: repo2}");
    let source = |version: i32| {
        let mut s = base();
        s.spec.postgres_version = Some(version);
        SourceLookup::Found(Box::new(s))
    };
    let major = c.spec.postgres_version.unwrap();
    let out = restore_source(&c, &source(major - 1));
    let errors: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        vec![
            "spec.bootstrap.restore.repo: Invalid value: \"repo2\": is not a repository of cluster \"src\" (repo1)".to_owned(),
            format!(
                "spec.postgresVersion: Invalid value: {major}: must be {}, the major version of cluster \"src\": a backup restores only into the PostgreSQL major that took it",
                major - 1
            ),
        ]
    );
    let fine = restoring("{cluster: src, repo: repo1}");
    assert_eq!(restore_source(&fine, &source(major)), Outcome::default());

    // A source not there (yet), or not readable: said, not refused.
    for (found, gist) in [
        (
            SourceLookup::Missing,
            "no PostgresCluster \"src\" in this namespace (yet)",
        ),
        (
            SourceLookup::Failed("connection refused".into()),
            "could not be read (connection refused)",
        ),
    ] {
        let out = restore_source(&fine, &found);
        assert_eq!(out.errors, vec![]);
        assert!(
            out.warnings.len() == 1 && out.warnings[0].contains(gist),
            "{:?}",
            out.warnings
        );
    }

    // A source being deleted takes its volume repository with it.
    let mut deleting = base();
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    let out = restore_source(&fine, &SourceLookup::Found(Box::new(deleting)));
    assert!(out.warnings[0].contains("is being deleted"), "{out:?}");

    // An inline repository needs no source at all.
    let inline = restoring(
        "{cluster: gone, repo: repo1, repository: {s3: {bucket: backups, endpoint: s3.example.com, region: eu-west-1}}}",
    );
    assert_eq!(
        restore_source(&inline, &SourceLookup::Missing),
        Outcome::default()
    );
}
