use super::*;
use crate::validate::validate;

fn spec(yaml: &str) -> PostgresClusterSpec {
    serde_yaml::from_str(yaml).unwrap()
}

fn minimal() -> PostgresClusterSpec {
    spec("storage: {size: 10Gi}")
}

fn param<'a>(s: &'a PostgresClusterSpec, k: &str) -> Option<&'a str> {
    s.postgresql
        .as_ref()?
        .parameters
        .as_ref()?
        .get(k)
        .map(ParameterValue::as_str)
}

fn with_memory(s: &PostgresClusterSpec, memory: &str) -> PostgresClusterSpec {
    let mut s = s.clone();
    let r = s.resources.get_or_insert_default();
    r.requests
        .get_or_insert_default()
        .insert("memory".into(), Quantity(memory.into()));
    s
}

#[test]
fn fills_every_default_from_the_configuration() {
    let c = Config::default();
    let r = resolve(&minimal(), None, &c);
    assert_eq!(r.postgres_version, Some(18));
    assert_eq!(r.image.as_deref(), c.image_for(18));
    assert_eq!(r.instances, Some(2));
    assert_eq!(r.resources, Some(c.postgres.resources.clone()));
    let p = r.patroni.as_ref().unwrap();
    assert_eq!(
        (p.ttl, p.loop_wait, p.retry_timeout),
        (Some(30), Some(10), Some(10))
    );
    assert_eq!(p.maximum_lag_on_failover, Some(1 << 20));
    assert_eq!(p.synchronous_mode, Some(SynchronousMode::Async));
    assert_eq!(param(&r, "shared_buffers"), Some("256MB"));
    for (k, v) in tuning::HA_FIXED {
        assert_eq!(param(&r, k), Some(v), "{k}");
    }
    assert_eq!(param(&r, "max_wal_senders"), Some("10"));
    assert_eq!(
        r.postgresql.as_ref().unwrap().pg_hba.as_ref().unwrap()[1],
        "host replication pgpilot_replication all scram-sha-256"
    );
    assert_eq!(r.pooler.as_ref().unwrap().enabled, Some(false));
    let x = r.monitoring.as_ref().unwrap().exporter.as_ref().unwrap();
    assert_eq!((x.enabled, x.port), (Some(true), Some(9187)));
    assert_eq!(
        r.scheduling.as_ref().unwrap().anti_affinity,
        Some(AntiAffinity::Preferred)
    );
    assert_eq!(
        r.service.as_ref().unwrap().type_,
        Some(ServiceType::ClusterIP)
    );
    assert_eq!(
        r.backup
            .as_ref()
            .unwrap()
            .pgbackrest
            .as_ref()
            .unwrap()
            .repos,
        Some(vec![])
    );
    assert!(is_resolved(&r, &c));
    assert!(!is_resolved(&minimal(), &c));
}

#[test]
fn user_values_win() {
    let s = spec(
        "postgresVersion: 15\nimage: example.com/pg:15.3\ninstances: 3\nstorage: {size: 10Gi}\npostgresql: {parameters: {shared_buffers: 100MB, wal_level: logical, max_connections: 42}}\npatroni: {ttl: 60, synchronousMode: strict}\n",
    );
    let r = resolve(&s, None, &Config::default());
    assert_eq!(r.image.as_deref(), Some("example.com/pg:15.3"));
    assert_eq!(param(&r, "shared_buffers"), Some("100MB"));
    assert_eq!(param(&r, "wal_level"), Some("logical"));
    assert_eq!(param(&r, "max_connections"), Some("42"));
    assert_eq!(r.patroni.as_ref().unwrap().ttl, Some(60));
    assert_eq!(
        r.patroni.as_ref().unwrap().synchronous_mode,
        Some(SynchronousMode::Strict)
    );
}

#[test]
fn requests_come_from_limits_and_the_memory_limit_from_the_request() {
    let r = resolve(
        &spec("storage: {size: 10Gi}\nresources: {limits: {cpu: '4', memory: 4Gi}}"),
        None,
        &Config::default(),
    );
    let res = r.resources.unwrap();
    assert_eq!(res.requests.as_ref().unwrap()["memory"].0, "4Gi");
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "4");
    let r = resolve(
        &spec("storage: {size: 10Gi}\nresources: {requests: {memory: 2Gi}}"),
        None,
        &Config::default(),
    );
    let res = r.resources.unwrap();
    assert_eq!(res.limits.as_ref().unwrap()["memory"].0, "2Gi");
    assert_eq!(res.requests.as_ref().unwrap()["cpu"].0, "500m");
}

#[test]
fn raising_the_memory_request_retunes_derived_parameters() {
    let c = Config::default();
    let stored = resolve(&minimal(), None, &c);
    let updated = resolve(&with_memory(&stored, "4Gi"), Some(&stored), &c);
    assert_eq!(param(&updated, "shared_buffers"), Some("1024MB"));
    assert_eq!(param(&updated, "effective_cache_size"), Some("3072MB"));
    assert_eq!(param(&updated, "max_connections"), Some("256"));
    // The memory limit was derived from the old request, so it follows too.
    assert_eq!(
        updated.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "4Gi"
    );
    // Fixed defaults do not move.
    assert_eq!(param(&updated, "random_page_cost"), Some("1.1"));
}

#[test]
fn an_explicit_parameter_survives_a_memory_change() {
    let c = Config::default();
    let mut s = minimal();
    s.postgresql = Some(PostgresqlSpec {
        parameters: Some(BTreeMap::from([("shared_buffers".into(), "300MB".into())])),
        pg_hba: None,
    });
    let stored = resolve(&s, None, &c);
    let updated = resolve(&with_memory(&stored, "4Gi"), Some(&stored), &c);
    assert_eq!(param(&updated, "shared_buffers"), Some("300MB"));
    assert_eq!(param(&updated, "effective_cache_size"), Some("3072MB"));
}

#[test]
fn derived_values_edited_in_the_same_update_are_kept() {
    let c = Config::default();
    let stored = resolve(&minimal(), None, &c);
    let mut new = with_memory(&stored, "4Gi");
    let params = new
        .postgresql
        .as_mut()
        .unwrap()
        .parameters
        .as_mut()
        .unwrap();
    params.insert("work_mem".into(), "16MB".into());
    let updated = resolve(&new, Some(&stored), &c);
    assert_eq!(param(&updated, "work_mem"), Some("16MB"));
    assert_eq!(param(&updated, "shared_buffers"), Some("1024MB"));
}

#[test]
fn growing_storage_and_instances_follow() {
    let c = Config::default();
    let stored = resolve(&minimal(), None, &c);
    let mut new = stored.clone();
    new.storage.size = Quantity("100Gi".into());
    new.instances = Some(12);
    let updated = resolve(&new, Some(&stored), &c);
    assert_eq!(param(&updated, "max_wal_size"), Some("16384MB"));
    assert_eq!(param(&updated, "max_wal_senders"), Some("16"));
}

#[test]
fn pg_hba_follows_tls_until_edited() {
    let c = Config::default();
    let stored = resolve(&minimal(), None, &c);
    let mut new = stored.clone();
    new.tls = Some(TlsSpec {
        issuer_ref: None,
        secret_name: Some("pg-cert".into()),
    });
    let updated = resolve(&new, Some(&stored), &c);
    assert_eq!(
        updated.postgresql.as_ref().unwrap().pg_hba,
        Some(default_pg_hba(true))
    );

    let mut custom = stored.clone();
    custom.postgresql.as_mut().unwrap().pg_hba =
        Some(vec!["host all all 10.0.0.0/8 scram-sha-256".into()]);
    let stored2 = resolve(&custom, Some(&stored), &c);
    let mut new = stored2.clone();
    new.tls = Some(TlsSpec {
        issuer_ref: None,
        secret_name: Some("pg-cert".into()),
    });
    let updated = resolve(&new, Some(&stored2), &c);
    assert_eq!(
        updated.postgresql.unwrap().pg_hba.unwrap(),
        vec!["host all all 10.0.0.0/8 scram-sha-256"]
    );
}

#[test]
fn pooler_size_follows_instances_when_enabled() {
    let c = Config::default();
    let single = resolve(
        &spec("instances: 1\nstorage: {size: 10Gi}\npooler: {enabled: true}"),
        None,
        &c,
    );
    assert_eq!(single.pooler.as_ref().unwrap().instances, Some(1));
    let mut new = single.clone();
    new.instances = Some(3);
    let updated = resolve(&new, Some(&single), &c);
    assert_eq!(updated.pooler.as_ref().unwrap().instances, Some(2));
    let disabled = resolve(&minimal(), None, &c);
    assert_eq!(
        disabled.pooler,
        Some(PoolerSpec {
            enabled: Some(false),
            ..Default::default()
        })
    );
}

#[test]
fn a_configuration_change_leaves_stored_values_alone() {
    let stored = resolve(&minimal(), None, &Config::default());
    let newer = Config::from_yaml("postgres:\n  images:\n    18: example.com/pg:18.9\n").unwrap();
    // Offline or on an unrelated update, the stored image stays...
    assert_eq!(resolve(&stored, None, &newer), stored);
    // ...and only a value still equal to the *current* derivation follows its inputs.
    let updated = resolve(&stored, Some(&stored), &newer);
    assert_eq!(
        updated.image.as_deref(),
        Some("ghcr.io/pgpilot/postgres:18.1")
    );
}

#[test]
fn user_roles_and_repos_are_completed() {
    let r = resolve(
        &spec(
            "storage: {size: 10Gi}\nusers: [{name: app}]\ndatabases: [{name: app}]\nbackup: {pgbackrest: {repos: [{name: repo1, volume: {size: 20Gi}}]}}\ntls: {issuerRef: {name: ca}}",
        ),
        None,
        &Config::default(),
    );
    let u = &r.users.as_ref().unwrap()[0];
    assert_eq!(u.options, Some(vec!["LOGIN".to_owned()]));
    assert_eq!(u.databases, Some(vec![]));
    assert_eq!(
        r.databases.as_ref().unwrap()[0].owner.as_deref(),
        Some("postgres")
    );
    let repo = &r
        .backup
        .as_ref()
        .unwrap()
        .pgbackrest
        .as_ref()
        .unwrap()
        .repos
        .as_ref()
        .unwrap()[0];
    let sched = repo.schedules.as_ref().unwrap();
    assert_eq!(sched.full.as_deref(), Some("0 1 * * 0"));
    assert_eq!(sched.incremental, None);
    assert_eq!(
        repo.retention,
        Some(Retention {
            full: Some(2),
            differential: Some(6)
        })
    );
    let issuer = r.tls.as_ref().unwrap().issuer_ref.as_ref().unwrap();
    assert_eq!(
        (issuer.kind.as_deref(), issuer.group.as_deref()),
        (Some("Issuer"), Some("cert-manager.io"))
    );
}

#[test]
fn resolved_minimal_validates_with_the_expected_warnings() {
    let c = PostgresCluster::new("demo", resolve(&minimal(), None, &Config::default()));
    let out = validate(&c, None);
    assert_eq!(out.errors, vec![]);
    assert_eq!(out.warnings.len(), 2, "{:?}", out.warnings);
}

/// No rule trusts anyone: the local socket by `peer`, the network by SCRAM.
#[test]
fn default_client_authentication_trusts_no_one() {
    for tls in [false, true] {
        let hba = default_pg_hba(tls);
        assert_eq!(hba[0], "local all all peer");
        assert!(hba.iter().all(|l| !l.ends_with(" trust")), "{hba:?}");
    }
}
