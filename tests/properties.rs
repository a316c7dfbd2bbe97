//! Properties of the pure core over generated specs:
//! `resolve` is idempotent, every resolved valid input validates, and neither `resolve` nor
//! `validate` panics on any input, however hostile.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use pgpilot::api::*;
use pgpilot::config::Config;
use pgpilot::resolve::resolve;
use pgpilot::validate::validate;
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;

fn quantity_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,4}(Ki|Mi|Gi|Ti|k|M|G|m)?",
        "[0-9]{0,3}\\.[0-9]{0,3}(Gi|e3|E)?",
        "-?[0-9]{1,40}[a-zA-Z]{0,3}",
        ".{0,12}",
    ]
}

fn wild_string() -> impl Strategy<Value = String> {
    prop_oneof![".{0,40}", "[a-z_][a-z0-9_]{0,70}", "\\PC{0,300}"]
}

fn resources(memory: impl Strategy<Value = String>) -> impl Strategy<Value = ResourceRequirements> {
    (
        option::of(memory),
        option::of(quantity_text()),
        option::of(quantity_text()),
    )
        .prop_map(|(req, cpu, lim)| {
            let mut r = ResourceRequirements::default();
            if let Some(m) = req {
                r.requests
                    .get_or_insert_default()
                    .insert("memory".into(), Quantity(m));
            }
            if let Some(c) = cpu {
                r.requests
                    .get_or_insert_default()
                    .insert("cpu".into(), Quantity(c));
            }
            if let Some(l) = lim {
                r.limits
                    .get_or_insert_default()
                    .insert("memory".into(), Quantity(l));
            }
            r
        })
}

fn sync_mode() -> impl Strategy<Value = SynchronousMode> {
    prop_oneof![
        Just(SynchronousMode::Async),
        Just(SynchronousMode::Sync),
        Just(SynchronousMode::Strict)
    ]
}

/// Anything the types can hold: out-of-range numbers, junk strings, contradictions.
fn any_spec() -> impl Strategy<Value = PostgresClusterSpec> {
    let scalars = (
        option::of(any::<i32>()),
        option::of(wild_string()),
        option::of(any::<i32>()),
        quantity_text(),
        option::of(wild_string()),
    );
    let pg = option::of((
        option::of(btree_map(
            wild_string(),
            wild_string().prop_map(ParameterValue),
            0..8,
        )),
        option::of(vec(wild_string(), 0..5)),
    ));
    let patroni = option::of((
        option::of(any::<i32>()),
        option::of(any::<i32>()),
        option::of(any::<i32>()),
        option::of(any::<i64>()),
        option::of(sync_mode()),
        option::of(any::<i32>()),
    ));
    let users = option::of(vec(
        (
            wild_string(),
            option::of(vec(wild_string(), 0..4)),
            option::of(vec(wild_string(), 0..3)),
        ),
        0..4,
    ));
    let dbs = option::of(vec((wild_string(), option::of(wild_string())), 0..4));
    let repos = option::of(vec(
        (
            wild_string(),
            option::of(quantity_text()),
            option::of(wild_string()),
            option::of(wild_string()),
        ),
        0..6,
    ));
    let misc = (
        option::of(any::<bool>()),
        option::of(any::<i32>()),
        option::of(any::<i32>()),
        option::of(wild_string()),
        option::of(any::<i32>()),
    );
    let target_type = prop_oneof![
        Just(RestoreTargetType::Latest),
        Just(RestoreTargetType::Time),
        Just(RestoreTargetType::Lsn),
        Just(RestoreTargetType::Xid),
        Just(RestoreTargetType::Name),
        Just(RestoreTargetType::Immediate),
    ];
    let restore = option::of((
        wild_string(),
        prop_oneof![Just("repo1".to_owned()), wild_string()],
        option::of((
            option::of(target_type),
            option::of(prop_oneof![
                Just("2026-12-01T10:00:00+02:00".to_owned()),
                Just("0/3000060".to_owned()),
                wild_string()
            ]),
            option::of(wild_string()),
            option::of(any::<bool>()),
        )),
        option::of(proptest::collection::btree_map(
            wild_string(),
            wild_string(),
            0..3,
        )),
    ))
    // Boxed: the whole tuple's strategy would otherwise outgrow a test thread's stack.
    .boxed();
    (
        scalars,
        option::of(resources(quantity_text())),
        pg,
        patroni,
        users,
        dbs,
        repos,
        misc,
        restore,
    )
        .prop_map(
            |(
                (version, image, instances, size, class),
                res,
                pg,
                patroni,
                users,
                dbs,
                repos,
                (pooler, pool_size, port, tls, conns),
                restore,
            )| PostgresClusterSpec {
                postgres_version: version,
                image,
                instances,
                storage: StorageSpec {
                    size: Quantity(size),
                    storage_class_name: class,
                },
                resources: res,
                postgresql: pg.map(|(parameters, pg_hba)| PostgresqlSpec { parameters, pg_hba }),
                patroni: patroni.map(|(ttl, loop_wait, retry_timeout, lag, mode, count)| {
                    PatroniSpec {
                        ttl,
                        loop_wait,
                        retry_timeout,
                        maximum_lag_on_failover: lag,
                        synchronous_mode: mode,
                        synchronous_node_count: count,
                        failsafe_mode: None,
                    }
                }),
                users: users.map(|u| {
                    u.into_iter()
                        .map(|(name, options, databases)| User {
                            name,
                            options,
                            databases,
                        })
                        .collect()
                }),
                databases: dbs.map(|d| {
                    d.into_iter()
                        .map(|(name, owner)| Database { name, owner })
                        .collect()
                }),
                backup: repos.map(|r| BackupSpec {
                    pgbackrest: Some(PgBackRestSpec {
                        image: None,
                        repos: Some(
                            r.into_iter()
                                .map(|(name, size, full, bucket)| BackupRepo {
                                    name,
                                    volume: size.map(|s| VolumeRepo {
                                        size: Some(Quantity(s)),
                                        storage_class_name: None,
                                    }),
                                    gcs: bucket.map(|bucket| GcsRepo {
                                        bucket,
                                        credentials_secret: None,
                                    }),
                                    schedules: full.map(|f| BackupSchedules {
                                        full: Some(f),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                })
                                .collect(),
                        ),
                    }),
                }),
                pooler: pooler.map(|enabled| PoolerSpec {
                    enabled: Some(enabled),
                    default_pool_size: pool_size,
                    max_client_connections: conns,
                    ..Default::default()
                }),
                monitoring: port.map(|p| MonitoringSpec {
                    exporter: Some(ExporterSpec {
                        port: Some(p),
                        ..Default::default()
                    }),
                }),
                // The same wild names as a namespace for the operator.
                network_policy: tls.clone().map(|s| NetworkPolicySpec {
                    enabled: Some(s.len() % 2 == 0),
                    operator_namespace: Some(s),
                }),
                tls: tls.map(|s| TlsSpec {
                    secret_name: Some(s),
                    issuer_ref: None,
                }),
                scheduling: None,
                service: None,
                paused: None,
                // The same wild restore, asked for in place as well (refused on a create).
                restore: restore
                    .clone()
                    .map(|(id, repo, target, options)| InPlaceRestore {
                        id,
                        repo,
                        target: target.map(|(type_, value, set, exclusive)| RestoreTarget {
                            type_,
                            value,
                            set,
                            exclusive,
                        }),
                        options,
                    }),
                bootstrap: restore.map(|(cluster, repo, target, options)| BootstrapSpec {
                    restore: Some(BootstrapRestore {
                        cluster,
                        repo,
                        repository: None,
                        target: target.map(|(type_, value, set, exclusive)| RestoreTarget {
                            type_,
                            value,
                            set,
                            exclusive,
                        }),
                        options,
                    }),
                }),
            },
        )
}

fn identifier() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,12}"
}

/// Short specs a user could reasonably write: every value legal on its own.
fn valid_input() -> impl Strategy<Value = PostgresClusterSpec> {
    let memory = prop_oneof![
        Just("256Mi"),
        Just("512Mi"),
        Just("1Gi"),
        Just("1.5Gi"),
        Just("3Gi"),
        Just("16Gi"),
        Just("256Gi")
    ];
    let size = prop_oneof![
        Just("1Gi"),
        Just("10Gi"),
        Just("1500M"),
        Just("250Gi"),
        Just("3Ti")
    ];
    (
        option::of(14..=18i32),
        1..=16i32,
        size,
        option::of(memory),
        option::of(sync_mode()),
        option::of(any::<bool>()),
        vec(identifier(), 0..4),
        0..=4usize,
        any::<bool>(),
    )
        .prop_map(
            |(version, instances, size, memory, mode, pooler, names, repos, tls)| {
                let mut names: Vec<String> = names.into_iter().map(|n| format!("u_{n}")).collect();
                names.sort();
                names.dedup();
                let resources = memory.map(|m| ResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "memory".to_owned(),
                        Quantity(m.to_owned()),
                    )])),
                    ..Default::default()
                });
                PostgresClusterSpec {
                    postgres_version: version,
                    instances: Some(instances),
                    storage: StorageSpec {
                        size: Quantity(size.into()),
                        storage_class_name: None,
                    },
                    resources,
                    patroni: Some(PatroniSpec {
                        synchronous_mode: if instances >= 2 { mode } else { None },
                        ..Default::default()
                    }),
                    users: Some(
                        names
                            .iter()
                            .map(|n| User {
                                name: n.clone(),
                                options: None,
                                databases: Some(vec![n.clone()]),
                            })
                            .collect(),
                    ),
                    databases: Some(
                        names
                            .iter()
                            .map(|n| Database {
                                name: n.clone(),
                                owner: Some(n.clone()),
                            })
                            .collect(),
                    ),
                    backup: Some(BackupSpec {
                        pgbackrest: Some(PgBackRestSpec {
                            image: None,
                            repos: Some(
                                (1..=repos)
                                    .map(|i| BackupRepo {
                                        name: format!("repo{i}"),
                                        volume: Some(VolumeRepo {
                                            size: Some(Quantity("20Gi".into())),
                                            storage_class_name: None,
                                        }),
                                        ..Default::default()
                                    })
                                    .collect(),
                            ),
                        }),
                    }),
                    pooler: pooler.map(|enabled| PoolerSpec {
                        enabled: Some(enabled),
                        ..Default::default()
                    }),
                    tls: tls.then(|| TlsSpec {
                        secret_name: Some("pg-tls".into()),
                        issuer_ref: None,
                    }),
                    ..Default::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn resolve_is_idempotent(spec in any_spec()) {
        let c = Config::default();
        let once = resolve(&spec, None, &c);
        prop_assert_eq!(&resolve(&once, None, &c), &once);
        // On UPDATE too: resolving against a stored spec is stable.
        prop_assert_eq!(resolve(&once, Some(&once), &c), once);
    }

    #[test]
    fn validate_is_total(spec in any_spec(), old in any_spec()) {
        let new = PostgresCluster::new("x", spec.clone());
        let old = PostgresCluster::new("x", old);
        let _ = validate(&new, Some(&old));
        let resolved = PostgresCluster::new("x", resolve(&spec, Some(&old.spec), &Config::default()));
        let out = validate(&resolved, None);
        for e in out.errors {
            prop_assert!(e.path.starts_with("spec.") || e.path.starts_with("metadata."), "{}", e);
        }
    }

    #[test]
    fn every_resolved_valid_input_validates(spec in valid_input()) {
        let c = Config::default();
        let resolved = resolve(&spec, None, &c);
        let outcome = validate(&PostgresCluster::new("pg", resolved.clone()), None);
        prop_assert!(outcome.errors.is_empty(), "{:#?}", outcome.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
        prop_assert!(pgpilot::resolve::is_resolved(&resolved, &c));
    }

    #[test]
    fn updates_of_valid_specs_keep_validating(spec in valid_input(), memory in prop_oneof![Just("512Mi"), Just("2Gi"), Just("64Gi")], grow in 0..4u32) {
        let c = Config::default();
        let stored = resolve(&spec, None, &c);
        let mut next = stored.clone();
        next.resources.get_or_insert_default().requests.get_or_insert_default().insert("memory".into(), Quantity(memory.into()));
        next.storage.size = Quantity(format!("{}Ti", 3 + grow));
        let updated = resolve(&next, Some(&stored), &c);
        let old = PostgresCluster::new("pg", stored);
        let outcome = validate(&PostgresCluster::new("pg", updated), Some(&old));
        prop_assert!(outcome.errors.is_empty(), "{:#?}", outcome.errors.iter().map(ToString::to_string).collect::<Vec<_>>());
    }

    #[test]
    fn parsing_arbitrary_json_never_panics(value in arbitrary_json()) {
        if let Ok(c) = pgpilot::manifest::from_value(value) {
            let r = resolve(&c.spec, None, &Config::default());
            let _ = validate(&PostgresCluster::new("x", r), Some(&c));
        }
    }
}

/// JSON shaped like a PostgresCluster, with random values in random places.
fn arbitrary_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        wild_string().prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            btree_map(
                prop_oneof![
                    Just("size".to_owned()),
                    Just("name".to_owned()),
                    Just("parameters".to_owned()),
                    "[a-z]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    let keys = [
        "postgresVersion",
        "instances",
        "image",
        "postgresql",
        "patroni",
        "users",
        "databases",
        "backup",
        "pooler",
        "tls",
        "scheduling",
        "service",
    ];
    (btree_map(proptest::sample::select(keys.to_vec()), value, 0..6), quantity_text()).prop_map(|(fields, size)| {
        let mut spec: serde_json::Map<String, serde_json::Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        spec.insert("storage".into(), serde_json::json!({ "size": size }));
        serde_json::json!({"apiVersion": "pgpilot.io/v1", "kind": "PostgresCluster", "metadata": {"name": "x"}, "spec": spec})
    })
}
