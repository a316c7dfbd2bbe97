//! pgBouncer: Deployment, Service, ConfigMap, PodDisruptionBudget (two or more instances) `C-pooler` (the Secret is a template in
//! `secrets.rs`). Clients log in with their own PostgreSQL passwords: pgBouncer looks them up
//! through `auth_query`, as the dedicated role `pgpilot_pooler`, via a SECURITY DEFINER
//! function the roles Job installs (see `roles.rs`), so the pooler never holds anyone's
//! password but its own.

use serde_json::json;

use super::pod::{container_security, pod_security, tmp_volume};
use super::secrets::pooler_enabled;
use super::statefulset::server_tls_secret;
use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::api::PoolMode;
use crate::names;

pub const CONFIG_KEY: &str = "pgbouncer.ini";
/// The function pgBouncer's `auth_query` calls, in the `postgres` database.
pub const AUTH_FUNCTION: &str = "pgpilot.pooler_auth";

pub fn ini(c: &Cluster) -> Result<String, RenderError> {
    let p = need(&c.spec.pooler, "spec.pooler")?;
    let mode = match need(&p.mode, "spec.pooler.mode")? {
        PoolMode::Session => "session",
        PoolMode::Transaction => "transaction",
        PoolMode::Statement => "statement",
    };
    let primary = c.service_host(&names::primary_service(c.name));
    let mut s = format!(
        "[databases]\n* = host={primary} port={port}\n\n[pgbouncer]\nlisten_addr = 0.0.0.0\nlisten_port = {port}\nunix_socket_dir =\n\
auth_type = scram-sha-256\nauth_file = /etc/pgbouncer/secret/userlist.txt\nauth_user = {user}\nauth_dbname = postgres\n\
auth_query = SELECT usename, passwd FROM {AUTH_FUNCTION}($1)\npool_mode = {mode}\nmax_client_conn = {max}\ndefault_pool_size = {pool}\n\
ignore_startup_parameters = extra_float_digits,options\nserver_check_query = select 1\nlog_connections = 0\nlog_disconnections = 0\n",
        port = names::POSTGRES_PORT,
        user = names::POOLER_USER,
        max = need(
            &p.max_client_connections,
            "spec.pooler.maxClientConnections"
        )?,
        pool = need(&p.default_pool_size, "spec.pooler.defaultPoolSize")?,
    );
    if c.spec.tls_enabled() {
        // The server requires TLS (hostssl), so pgBouncer must use it, and offers it on.
        let dir = super::SERVER_TLS_DIR;
        s.push_str(&format!(
            "server_tls_sslmode = verify-ca\nserver_tls_ca_file = {dir}/ca.crt\nclient_tls_sslmode = require\nclient_tls_cert_file = {dir}/tls.crt\nclient_tls_key_file = {dir}/tls.key\nclient_tls_ca_file = {dir}/ca.crt\n"
        ));
    } else {
        s.push_str("server_tls_sslmode = disable\nclient_tls_sslmode = disable\n");
    }
    Ok(s)
}

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    if !pooler_enabled(c) {
        return Ok(());
    }
    let p = need(&c.spec.pooler, "spec.pooler")?;
    let name = names::pooler(c.name);
    let ini = ini(c)?;
    // pgBouncer reads its file at start and on a signal nobody here can send: a changed
    // file rolls the pooler pods (one at a time, a new one ready before an old one goes).
    let config_hash = super::content_hash(&ini);
    out.config_maps.push(build(
        "ConfigMap",
        json!({ "metadata": c.meta(name.clone(), component::POOLER), "data": { CONFIG_KEY: ini } }),
    )?);
    out.services.push(build(
        "Service",
        json!({
            "metadata": c.meta(name.clone(), component::POOLER),
            "spec": {
                "type": "ClusterIP",
                "selector": c.selector(component::POOLER),
                "ports": [{ "name": "postgres", "port": names::POSTGRES_PORT, "targetPort": names::POSTGRES_PORT, "protocol": "TCP" }]
            }
        }),
    )?);
    let mut mounts = vec![
        json!({ "name": "config", "mountPath": "/etc/pgbouncer", "readOnly": true }),
        json!({ "name": "secret", "mountPath": "/etc/pgbouncer/secret", "readOnly": true }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
    ];
    let mut volumes = vec![
        json!({ "name": "config", "configMap": { "name": name, "items": [{ "key": CONFIG_KEY, "path": CONFIG_KEY }] } }),
        json!({ "name": "secret", "secret": { "secretName": name, "items": [{ "key": "userlist.txt", "path": "userlist.txt" }], "defaultMode": 0o440 } }),
        tmp_volume(),
    ];
    if c.spec.tls_enabled() {
        mounts.push(
            json!({ "name": super::SERVER_TLS_VOLUME, "mountPath": super::SERVER_TLS_DIR, "readOnly": true }),
        );
        volumes.push(json!({ "name": super::SERVER_TLS_VOLUME, "secret": { "secretName": server_tls_secret(c)?, "defaultMode": 0o440 } }));
    }
    out.deployments.push(build(
        "Deployment",
        json!({
            "metadata": c.meta(name.clone(), component::POOLER),
            "spec": {
                "replicas": need(&p.instances, "spec.pooler.instances")?,
                "selector": { "matchLabels": c.selector(component::POOLER) },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": 1 } },
                "template": {
                    "metadata": {
                        "labels": c.labels(component::POOLER),
                        "annotations": { super::CONFIG_HASH_ANNOTATION: config_hash }
                    },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "enableServiceLinks": false,
                        "securityContext": pod_security(),
                        "affinity": { "podAntiAffinity": { "preferredDuringSchedulingIgnoredDuringExecution": [{
                            "weight": 100,
                            "podAffinityTerm": { "labelSelector": { "matchLabels": c.selector(component::POOLER) }, "topologyKey": "kubernetes.io/hostname" }
                        }]}},
                        "containers": [{
                            "name": "pgbouncer",
                            "image": need(&p.image, "spec.pooler.image")?,
                            "command": ["pgbouncer", format!("/etc/pgbouncer/{CONFIG_KEY}")],
                            "ports": [{ "name": "postgres", "containerPort": names::POSTGRES_PORT }],
                            "readinessProbe": { "tcpSocket": { "port": names::POSTGRES_PORT }, "periodSeconds": 5 },
                            "livenessProbe": { "tcpSocket": { "port": names::POSTGRES_PORT }, "periodSeconds": 15 },
                            "resources": need(&p.resources, "spec.pooler.resources")?,
                            "volumeMounts": mounts,
                            "securityContext": container_security()
                        }],
                        "volumes": volumes
                    }
                }
            }
        }),
    )?);
    // A node drain takes pooler pods one at a time, like the database's: the Service keeps
    // endpoints while the Deployment brings a replacement up elsewhere.
    if *need(&p.instances, "spec.pooler.instances")? > 1 {
        out.pod_disruption_budgets.push(build(
            "PodDisruptionBudget",
            json!({
                "metadata": c.meta(name, component::POOLER),
                "spec": { "maxUnavailable": 1, "selector": { "matchLabels": c.selector(component::POOLER) } }
            }),
        )?);
    }
    Ok(())
}
