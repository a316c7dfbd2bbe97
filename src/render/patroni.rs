//! ConfigMap `C-patroni`: Patroni's native configuration (`patroni.yaml`).
//!
//! Per-pod values (name, namespace, pod IP, passwords) come from the environment, which
//! Patroni lets override any setting (`PATRONI_NAME`, `PATRONI_SUPERUSER_PASSWORD`, ...), so
//! one ConfigMap serves every member. Settings that must be equal on all members (timings,
//! replication mode, parameters, pg_hba) go to `bootstrap.dcs`, Patroni's shared dynamic
//! configuration.

use serde_json::{Map, Value, json};

use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::api::SynchronousMode;
use crate::names;

pub const CONFIG_KEY: &str = "patroni.yaml";

/// The stanza name shared by every pgBackRest command.
pub const STANZA: &str = "db";

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let config = config(c)?;
    out.patroni_dynamic_config = config["bootstrap"]["dcs"].clone();
    // Changes of the dynamic part reach Patroni through its REST API; the rest of the file
    // is read at start, so the pod template carries its hash (see statefulset.rs).
    let mut local = config.clone();
    local["bootstrap"]["dcs"] = Value::Null;
    let text = serde_yaml::to_string(&config).map_err(|e| RenderError::Build {
        what: CONFIG_KEY.into(),
        reason: e.to_string(),
    })?;
    out.patroni_local_config_hash = super::content_hash(&local.to_string());
    out.config_maps.push(build(
        "ConfigMap",
        json!({
            "metadata": c.meta(names::patroni(c.name), component::PATRONI),
            "data": { CONFIG_KEY: text }
        }),
    )?);
    Ok(())
}

/// Patroni's dynamic configuration: what every member shares through the DCS (timings,
/// replication mode, parameters, pg_hba). Seeds `bootstrap.dcs`; on a running cluster the
/// controller sends Patroni the difference.
pub fn dynamic_config(c: &Cluster) -> Result<Value, RenderError> {
    let spec = c.spec;
    let pt = need(&spec.patroni, "spec.patroni")?;
    let pg = need(&spec.postgresql, "spec.postgresql")?;
    let params = need(&pg.parameters, "spec.postgresql.parameters")?;
    let mode = *need(&pt.synchronous_mode, "spec.patroni.synchronousMode")?;

    let mut dcs_params: Map<String, Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    if !c.spec.backup_repos().is_empty() {
        // pgBackRest pushes each WAL segment to every repository; replicas and point-in-time
        // recovery fetch them back.
        dcs_params.insert("archive_mode".into(), "on".into());
        dcs_params.insert(
            "archive_command".into(),
            super::pgbackrest::archive_command().into(),
        );
        dcs_params.insert(
            "restore_command".into(),
            format!("pgbackrest --stanza={STANZA} archive-get %f \"%p\"").into(),
        );
    }
    Ok(json!({
        "ttl": need(&pt.ttl, "spec.patroni.ttl")?,
        "loop_wait": need(&pt.loop_wait, "spec.patroni.loopWait")?,
        "retry_timeout": need(&pt.retry_timeout, "spec.patroni.retryTimeout")?,
        "maximum_lag_on_failover": need(&pt.maximum_lag_on_failover, "spec.patroni.maximumLagOnFailover")?,
        "synchronous_mode": mode != SynchronousMode::Async,
        "synchronous_mode_strict": mode == SynchronousMode::Strict,
        "synchronous_node_count": need(&pt.synchronous_node_count, "spec.patroni.synchronousNodeCount")?,
        "failsafe_mode": need(&pt.failsafe_mode, "spec.patroni.failsafeMode")?,
        "postgresql": {
            "use_pg_rewind": true,
            "use_slots": true,
            "parameters": dcs_params,
            "pg_hba": need(&pg.pg_hba, "spec.postgresql.pgHba")?
        }
    }))
}

/// `restapi`: with TLS, the server certificate PostgreSQL serves; its CA is what Patroni
/// checks the other members' certificates against when it calls them.
fn restapi(c: &Cluster) -> Value {
    let mut restapi = json!({ "listen": format!("0.0.0.0:{}", names::PATRONI_PORT) });
    if c.spec.tls_enabled() {
        let dir = super::SERVER_TLS_DIR;
        restapi["certfile"] = format!("{dir}/tls.crt").into();
        restapi["keyfile"] = format!("{dir}/tls.key").into();
        restapi["cafile"] = format!("{dir}/ca.crt").into();
    }
    restapi
}

/// The whole of `patroni.yaml`, as a JSON value (YAML is a superset).
pub fn config(c: &Cluster) -> Result<Value, RenderError> {
    let major = *need(&c.spec.postgres_version, "spec.postgresVersion")?;

    // Only this member's server: socket and TLS files live at fixed paths in the pod.
    let mut local_params = json!({ "unix_socket_directories": super::SOCKET_DIR });
    if c.spec.tls_enabled() {
        let dir = super::SERVER_TLS_DIR;
        local_params["ssl"] = "on".into();
        local_params["ssl_cert_file"] = format!("{dir}/tls.crt").into();
        local_params["ssl_key_file"] = format!("{dir}/tls.key").into();
        local_params["ssl_ca_file"] = format!("{dir}/ca.crt").into();
        local_params["ssl_min_protocol_version"] = "TLSv1.2".into();
    }

    let mut postgresql = json!({
        "listen": format!("0.0.0.0:{}", names::POSTGRES_PORT),
        "data_dir": super::data_dir(major),
        "bin_dir": super::bin_dir(major),
        "pgpass": "/tmp/pgpass",
        "authentication": {
            "superuser": { "username": names::SUPERUSER },
            "replication": { "username": names::REPLICATION_USER },
            "rewind": { "username": names::SUPERUSER }
        },
        "parameters": local_params,
        "basebackup": [{ "checkpoint": "fast" }],
        "create_replica_methods": ["basebackup"]
    });
    if !c.spec.backup_repos().is_empty() {
        // A new replica restores the latest backup and replays WAL from the repository
        // instead of copying the whole primary; base backup remains the fallback.
        postgresql["create_replica_methods"] = json!(["pgbackrest", "basebackup"]);
        postgresql["pgbackrest"] = json!({
            "command": format!("pgbackrest --stanza={STANZA} --delta restore"),
            "keep_data": true,
            "no_params": true
        });
        // The primary reports pgBackRest's inventory on its pod when asked (a reload) and
        // when it becomes primary.
        let report = super::pgbackrest::inventory_callback();
        postgresql["callbacks"] = json!({ "on_reload": report, "on_role_change": report });
    }

    let labels = c.selector(component::DATABASE);
    Ok(json!({
        "scope": c.name,
        "kubernetes": {
            "labels": labels,
            "scope_label": names::CLUSTER_LABEL,
            "role_label": names::ROLE_LABEL,
            "leader_label_value": names::ROLE_PRIMARY,
            "follower_label_value": names::ROLE_REPLICA,
            "standby_leader_label_value": names::ROLE_PRIMARY,
            "use_endpoints": true,
            "ports": [{ "name": "postgresql", "port": names::POSTGRES_PORT }]
        },
        "restapi": restapi(c),
        "bootstrap": {
            "dcs": dynamic_config(c)?,
            // Checksums catch storage corruption; they cannot be turned on later without
            // rewriting every page.
            "initdb": [{ "encoding": "UTF8" }, { "locale": "C.UTF-8" }, "data-checksums"]
        },
        "postgresql": postgresql,
        "watchdog": { "mode": "off" }
    }))
}
