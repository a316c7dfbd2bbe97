//! `resolve`: a user's short spec → the complete, explicit spec that is stored and run.
//!
//! Total (any input, no panic), deterministic, and idempotent: `resolve(resolve(x)) ==
//! resolve(x)`. A value already present is the user's and is kept, with one exception on
//! UPDATE: a *derived* default (tuned parameters, the image, the memory limit, pg_hba, pooler
//! size) that still equals what the old spec's inputs derived is derived again from the new
//! inputs, so raising the memory request retunes `shared_buffers` while an explicit
//! `shared_buffers` survives.

pub mod restore;
pub mod tuning;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::api::*;
use crate::config::Config;
use crate::names;
use crate::quantity;
use tuning::TuningInputs;

/// Resolves `spec`. `old` is the stored spec on UPDATE, `None` on CREATE and offline.
pub fn resolve(
    spec: &PostgresClusterSpec,
    old: Option<&PostgresClusterSpec>,
    config: &Config,
) -> PostgresClusterSpec {
    let mut out = spec.clone();
    canonical_quantities(&mut out);
    let old = old.map(|o| {
        let mut o = o.clone();
        canonical_quantities(&mut o);
        o
    });
    let old_derived = old.as_ref().map(|o| Derived::of(o, config));

    out.postgres_version
        .get_or_insert(config.postgres.default_version);
    out.instances.get_or_insert(config.postgres.instances);

    // Resources: missing requests come from the limits (as Kubernetes itself would fill
    // them), then from the configuration; a missing memory limit follows the request.
    let mut resources = match out.resources.take() {
        None => config.postgres.resources.clone(),
        Some(mut r) => {
            fill_requests(&mut r, &config.postgres.resources);
            r
        }
    };
    let memory_limit_derived = memory_request(&resources).cloned();
    if let Some(limit) = memory_limit_derived {
        let current = resources
            .limits
            .as_ref()
            .and_then(|l| l.get("memory"))
            .cloned();
        let old_value = old_derived.as_ref().and_then(|d| d.memory_limit.clone());
        let limit = follow(current, old_value, limit);
        resources
            .limits
            .get_or_insert_default()
            .insert("memory".into(), limit);
    }
    out.resources = Some(resources);

    // max_connections first: work_mem is derived from it.
    let memory = memory_bytes(&out, config);
    if let Some(derived) = tuning::derive_max_connections(memory) {
        let previous = old
            .as_ref()
            .and_then(|o| tuning::derive_max_connections(memory_bytes(o, config)));
        let params = out
            .postgresql
            .get_or_insert_default()
            .parameters
            .get_or_insert_default();
        let current = params.remove("max_connections");
        let value = follow(current, previous.map(ParameterValue::from), derived.into());
        params.insert("max_connections".into(), value);
    }

    let new = Derived::of(&out, config);
    let old = old_derived.as_ref();

    if let Some(image) = new.image.clone() {
        out.image = Some(follow(
            out.image.take(),
            old.and_then(|d| d.image.clone()),
            image,
        ));
    }

    let pg = out.postgresql.get_or_insert_default();
    let params = pg.parameters.get_or_insert_default();
    for (k, v) in &config.postgres.parameters {
        params.entry(k.clone()).or_insert_with(|| v.as_str().into());
    }
    for (k, v) in tuning::HA_FIXED {
        params.entry(k.to_owned()).or_insert_with(|| v.into());
    }
    for (k, v) in &new.parameters {
        let previous = old
            .and_then(|d| d.parameters.get(k))
            .map(|v| ParameterValue::from(v.as_str()));
        let value = follow(params.remove(k), previous, v.as_str().into());
        params.insert(k.clone(), value);
    }
    pg.pg_hba = Some(follow(
        pg.pg_hba.take(),
        old.map(|d| d.pg_hba.clone()),
        new.pg_hba.clone(),
    ));

    let p = out.patroni.get_or_insert_default();
    let d = &config.patroni;
    p.ttl.get_or_insert(d.ttl);
    p.loop_wait.get_or_insert(d.loop_wait);
    p.retry_timeout.get_or_insert(d.retry_timeout);
    p.maximum_lag_on_failover
        .get_or_insert(d.maximum_lag_on_failover);
    p.synchronous_mode.get_or_insert(d.synchronous_mode);
    p.synchronous_node_count
        .get_or_insert(d.synchronous_node_count);
    p.failsafe_mode.get_or_insert(d.failsafe_mode);

    for user in out.users.get_or_insert_default() {
        user.options.get_or_insert_with(|| vec!["LOGIN".into()]);
        user.databases.get_or_insert_default();
    }
    for db in out.databases.get_or_insert_default() {
        db.owner.get_or_insert_with(|| names::SUPERUSER.into());
    }

    let pgbackrest = out
        .backup
        .get_or_insert_default()
        .pgbackrest
        .get_or_insert_default();
    pgbackrest
        .image
        .get_or_insert_with(|| config.backup.image.clone());
    for repo in pgbackrest.repos.get_or_insert_default() {
        if let Some(s3) = repo.s3.as_mut() {
            s3.uri_style.get_or_insert(S3UriStyle::Host);
        }
        repo.schedules.get_or_insert_with(|| BackupSchedules {
            full: Some(config.backup.full_schedule.clone()),
            differential: Some(config.backup.differential_schedule.clone()),
            incremental: None,
        });
        let retention = repo.retention.get_or_insert_default();
        retention.full.get_or_insert(config.backup.retention_full);
        retention
            .differential
            .get_or_insert(config.backup.retention_differential);
    }

    let pooler = out.pooler.get_or_insert_default();
    if *pooler.enabled.get_or_insert(false) {
        let d = &config.pooler;
        pooler.image.get_or_insert_with(|| d.image.clone());
        pooler.instances = Some(follow(
            pooler.instances,
            old.map(|o| o.pooler_instances),
            new.pooler_instances,
        ));
        pooler.mode.get_or_insert(d.mode);
        pooler
            .max_client_connections
            .get_or_insert(d.max_client_connections);
        pooler.default_pool_size.get_or_insert(d.default_pool_size);
        pooler.resources.get_or_insert_with(|| d.resources.clone());
    }

    let exporter = out
        .monitoring
        .get_or_insert_default()
        .exporter
        .get_or_insert_default();
    if *exporter.enabled.get_or_insert(config.exporter.enabled) {
        let d = &config.exporter;
        exporter.image.get_or_insert_with(|| d.image.clone());
        exporter.port.get_or_insert(d.port);
        exporter
            .resources
            .get_or_insert_with(|| d.resources.clone());
    }

    if let Some(issuer) = out.tls.as_mut().and_then(|t| t.issuer_ref.as_mut()) {
        issuer.kind.get_or_insert_with(|| "Issuer".into());
        issuer.group.get_or_insert_with(|| "cert-manager.io".into());
    }

    let s = out.scheduling.get_or_insert_default();
    s.anti_affinity
        .get_or_insert(config.scheduling.anti_affinity);
    s.node_selector.get_or_insert_default();
    s.tolerations.get_or_insert_default();
    s.topology_spread_constraints.get_or_insert_default();

    let svc = out.service.get_or_insert_default();
    svc.type_.get_or_insert(config.service.type_);
    svc.annotations.get_or_insert_default();
    svc.load_balancer_source_ranges.get_or_insert_default();

    let np = out.network_policy.get_or_insert_default();
    np.enabled.get_or_insert(config.network_policy.enabled);
    np.operator_namespace
        .get_or_insert_with(|| config.network_policy.operator_namespace.clone());

    if let Some(r) = out.bootstrap.as_mut().and_then(|b| b.restore.as_mut()) {
        restore::resolve(&mut r.target, &mut r.options);
        if let Some(s3) = r.repository.as_mut().and_then(|s| s.s3.as_mut()) {
            s3.uri_style.get_or_insert(S3UriStyle::Host);
        }
    }
    if let Some(r) = out.restore.as_mut() {
        restore::resolve(&mut r.target, &mut r.options);
    }

    out.paused.get_or_insert(false);
    out
}

/// True when `spec` is complete: resolving it again would change nothing. A stored object
/// that is not (written while the webhook was bypassed) must go through admission again.
pub fn is_resolved(spec: &PostgresClusterSpec, config: &Config) -> bool {
    resolve(spec, None, config) == *spec
}

/// Every quantity of `spec` in the API server's canonical form (see
/// [`quantity::canonical`]): first, so that derived values and comparisons with the stored
/// spec see the same text the API server would store.
fn canonical_quantities(spec: &mut PostgresClusterSpec) {
    fn one(q: &mut Quantity) {
        if let Some(c) = quantity::canonical(&q.0) {
            q.0 = c;
        }
    }
    fn resources(r: Option<&mut ResourceRequirements>) {
        let Some(r) = r else { return };
        for map in [r.requests.as_mut(), r.limits.as_mut()]
            .into_iter()
            .flatten()
        {
            map.values_mut().for_each(one);
        }
    }
    one(&mut spec.storage.size);
    resources(spec.resources.as_mut());
    if let Some(pooler) = spec.pooler.as_mut() {
        resources(pooler.resources.as_mut());
    }
    if let Some(exporter) = spec.monitoring.as_mut().and_then(|m| m.exporter.as_mut()) {
        resources(exporter.resources.as_mut());
    }
    let repos = spec
        .backup
        .as_mut()
        .and_then(|b| b.pgbackrest.as_mut())
        .and_then(|p| p.repos.as_mut());
    for repo in repos.into_iter().flatten() {
        if let Some(size) = repo.volume.as_mut().and_then(|v| v.size.as_mut()) {
            one(size);
        }
    }
}

/// A derived default: the current value, unless it is absent or still equals what the old
/// inputs derived, in which case the value derived from the new inputs.
fn follow<T: PartialEq>(current: Option<T>, old_derived: Option<T>, new_derived: T) -> T {
    match current {
        Some(v) if old_derived.as_ref() != Some(&v) => v,
        _ => new_derived,
    }
}

/// Everything derived from other fields of a spec.
struct Derived {
    image: Option<String>,
    memory_limit: Option<Quantity>,
    parameters: BTreeMap<String, String>,
    pg_hba: Vec<String>,
    pooler_instances: i32,
}

impl Derived {
    fn of(spec: &PostgresClusterSpec, config: &Config) -> Derived {
        let version = spec
            .postgres_version
            .unwrap_or(config.postgres.default_version);
        let instances = spec.instances.unwrap_or(config.postgres.instances);
        let resources = spec
            .resources
            .as_ref()
            .unwrap_or(&config.postgres.resources);
        let memory = memory_request(resources);
        let connections = spec
            .postgresql
            .as_ref()
            .and_then(|p| p.parameters.as_ref())
            .and_then(|p| p.get("max_connections"))
            .and_then(|v| v.as_str().parse().ok());
        let inputs = TuningInputs {
            memory: memory.and_then(|q| quantity::bytes(&q.0).ok()),
            storage: quantity::bytes(&spec.storage.size.0).ok(),
            instances,
            connections,
        };
        let tls = spec.tls_enabled();
        Derived {
            image: config.image_for(version).map(str::to_owned),
            memory_limit: memory.cloned(),
            parameters: tuning::derive(inputs),
            pg_hba: default_pg_hba(tls),
            pooler_instances: if instances >= 2 { 2 } else { 1 },
        }
    }
}

/// The memory request in bytes, as resolution sees it (the configuration's when unset).
fn memory_bytes(spec: &PostgresClusterSpec, config: &Config) -> Option<i128> {
    let resources = spec
        .resources
        .as_ref()
        .unwrap_or(&config.postgres.resources);
    memory_request(resources).and_then(|q| quantity::bytes(&q.0).ok())
}

fn memory_request(r: &ResourceRequirements) -> Option<&Quantity> {
    r.requests.as_ref().and_then(|m| m.get("memory"))
}

fn fill_requests(r: &mut ResourceRequirements, defaults: &ResourceRequirements) {
    for key in ["cpu", "memory"] {
        let present = r.requests.as_ref().is_some_and(|m| m.contains_key(key));
        if present {
            continue;
        }
        let from_limit = r.limits.as_ref().and_then(|l| l.get(key)).cloned();
        let from_config = defaults.requests.as_ref().and_then(|m| m.get(key)).cloned();
        if let Some(q) = from_limit.or(from_config) {
            r.requests.get_or_insert_default().insert(key.into(), q);
        }
    }
}

/// The default client authentication: the local socket by `peer` (the operating-system
/// user must be the database user: pgBackRest, running as `postgres`, connects as
/// `postgres`; nobody else logs in through the socket without a password), everything
/// remote needs SCRAM, and replication is open only to the replication user.
pub fn default_pg_hba(tls: bool) -> Vec<String> {
    let host = if tls { "hostssl" } else { "host" };
    let repl = names::REPLICATION_USER;
    vec![
        "local all all peer".into(),
        format!("{host} replication {repl} all scram-sha-256"),
        "host replication all all reject".into(),
        format!("{host} all all all scram-sha-256"),
    ]
}

#[cfg(test)]
mod tests;
