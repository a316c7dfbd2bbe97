//! StatefulSet `C`: PostgreSQL under Patroni, one pod per instance, and PodDisruptionBudget
//! `C`.

use serde_json::{Value, json};

use super::patroni::CONFIG_KEY;
use super::pgbackrest::{ARCHIVE_PUSH, INSTANCE_CONF, REPORT};
use super::pod::{container_security, field_env, pod_security, scheduling, secret_env, tmp_volume};
use super::secrets::exporter_enabled;
use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::names;

/// Where a pod's ServiceAccount credentials are found (token, `ca.crt`, `namespace`), the
/// path Patroni's Kubernetes client reads.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let spec = c.spec;
    let instances = *need(&spec.instances, "spec.instances")?;
    let image = need(&spec.image, "spec.image")?;
    let resources = need(&spec.resources, "spec.resources")?;

    let mut env = vec![
        field_env("PATRONI_NAME", "metadata.name"),
        field_env("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
        field_env("PATRONI_KUBERNETES_POD_IP", "status.podIP"),
        json!({ "name": "PATRONI_POSTGRESQL_CONNECT_ADDRESS", "value": format!("$(PATRONI_KUBERNETES_POD_IP):{}", names::POSTGRES_PORT) }),
        json!({ "name": "PATRONI_RESTAPI_CONNECT_ADDRESS", "value": restapi_address(c) }),
        secret_env(
            "PATRONI_SUPERUSER_PASSWORD",
            &names::superuser_secret(c.name),
            "password",
        ),
        secret_env(
            "PATRONI_REPLICATION_PASSWORD",
            &names::replication_secret(c.name),
            "password",
        ),
        secret_env(
            "PATRONI_REWIND_PASSWORD",
            &names::superuser_secret(c.name),
            "password",
        ),
        secret_env(
            "PATRONI_RESTAPI_USERNAME",
            &names::patroni_api_secret(c.name),
            "username",
        ),
        secret_env(
            "PATRONI_RESTAPI_PASSWORD",
            &names::patroni_api_secret(c.name),
            "password",
        ),
    ];
    env.sort_by_key(|e| e["name"].as_str().map(str::to_owned));

    let mut mounts = vec![
        json!({ "name": "pgdata", "mountPath": super::PGDATA_MOUNT }),
        json!({ "name": "patroni-config", "mountPath": super::PATRONI_CONFIG_DIR, "readOnly": true }),
        json!({ "name": "socket", "mountPath": super::SOCKET_DIR }),
        json!({ "name": "tmp", "mountPath": "/tmp" }),
        json!({ "name": "shm", "mountPath": "/dev/shm" }),
    ];
    let mut volumes = vec![
        json!({ "name": "patroni-config", "configMap": { "name": names::patroni(c.name), "items": [{ "key": CONFIG_KEY, "path": CONFIG_KEY }] } }),
        json!({ "name": "socket", "emptyDir": {} }),
        tmp_volume(),
        // PostgreSQL's parallel workers use POSIX shared memory; the runtime's 64 MiB
        // default /dev/shm is too small for them.
        json!({ "name": "shm", "emptyDir": { "medium": "Memory" } }),
    ];
    // The ServiceAccount's token (Patroni edits Endpoints and Pods with it) reaches the
    // Patroni container alone: not automounted into every container of the pod (the
    // exporter, pgBackRest's server), but projected here as the kubelet would.
    mounts.push(
        json!({ "name": "patroni-token", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": true }),
    );
    volumes.push(json!({ "name": "patroni-token", "projected": { "defaultMode": 0o644, "sources": [
        { "serviceAccountToken": { "path": "token", "expirationSeconds": 3607 } },
        { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
        { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } }
    ] } }));
    if c.spec.tls_enabled() {
        mounts.push(
            json!({ "name": super::SERVER_TLS_VOLUME, "mountPath": super::SERVER_TLS_DIR, "readOnly": true }),
        );
        // 0640: PostgreSQL accepts a key readable by its group when root owns the file,
        // which is how the kubelet writes Secret volumes with an fsGroup.
        volumes.push(json!({ "name": super::SERVER_TLS_VOLUME, "secret": { "secretName": server_tls_secret(c)?, "defaultMode": 0o640 } }));
    }

    let mut containers = Vec::new();
    if !c.spec.backup_repos().is_empty() {
        let pgbackrest_mounts = json!([
            { "name": "pgbackrest-config", "mountPath": super::PGBACKREST_CONFIG_DIR, "readOnly": true },
            { "name": "pgbackrest-tls", "mountPath": super::PGBACKREST_TLS_DIR, "readOnly": true }
        ]);
        mounts.extend(pgbackrest_mounts.as_array().cloned().unwrap_or_default());
        volumes.push(json!({ "name": "pgbackrest-config", "configMap": { "name": names::pgbackrest(c.name), "items": [
            { "key": INSTANCE_CONF, "path": "pgbackrest.conf" },
            { "key": ARCHIVE_PUSH, "path": ARCHIVE_PUSH },
            { "key": REPORT, "path": REPORT }
        ] } }));
        // For the archive report (report.py): Patroni passes PostgreSQL, and so
        // archive_command, no `PATRONI_*` or `KUBERNETES_*` variable.
        env.extend([
            field_env("PGPILOT_POD_NAME", "metadata.name"),
            json!({ "name": "PGPILOT_API_HOST", "value": "$(KUBERNETES_SERVICE_HOST)" }),
            json!({ "name": "PGPILOT_API_PORT", "value": "$(KUBERNETES_SERVICE_PORT)" }),
        ]);
        volumes.push(json!({ "name": "pgbackrest-tls", "secret": { "secretName": names::pgbackrest_tls_secret(c.name), "defaultMode": 0o640 } }));
        // pgBackRest's TLS server: backups taken by the repository host read the data
        // directory through it.
        containers.push(json!({
            "name": "pgbackrest",
            "image": image,
            "command": ["pgbackrest", "server"],
            "ports": [{ "name": "pgbackrest", "containerPort": names::PGBACKREST_PORT }],
            "readinessProbe": { "tcpSocket": { "port": names::PGBACKREST_PORT }, "periodSeconds": 10 },
            "volumeMounts": [
                { "name": "pgdata", "mountPath": super::PGDATA_MOUNT },
                { "name": "socket", "mountPath": super::SOCKET_DIR },
                { "name": "tmp", "mountPath": "/tmp" },
                { "name": "pgbackrest-config", "mountPath": super::PGBACKREST_CONFIG_DIR, "readOnly": true },
                { "name": "pgbackrest-tls", "mountPath": super::PGBACKREST_TLS_DIR, "readOnly": true }
            ],
            "resources": { "requests": { "cpu": "10m", "memory": "32Mi" }, "limits": { "memory": "256Mi" } },
            "securityContext": container_security()
        }));
    }

    // With TLS Patroni serves HTTPS only; the kubelet probes it so, and the operator reads
    // the scheme from here to call Patroni the same way (controller/members.rs).
    let scheme = if spec.tls_enabled() { "HTTPS" } else { "HTTP" };
    let probe = |path: &str, failures: i32| {
        json!({
            "httpGet": { "path": path, "port": names::PATRONI_PORT, "scheme": scheme },
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": failures
        })
    };
    containers.insert(
        0,
        json!({
            "name": "postgres",
            "image": image,
            "command": ["patroni", format!("{}/{CONFIG_KEY}", super::PATRONI_CONFIG_DIR)],
            "env": env,
            "ports": [
                { "name": "postgres", "containerPort": names::POSTGRES_PORT },
                { "name": "patroni", "containerPort": names::PATRONI_PORT }
            ],
            "readinessProbe": probe("/readiness", 3),
            // Patroni answers /liveness while its loop runs, also during long recoveries;
            // a generous threshold keeps a busy primary from being killed.
            "livenessProbe": probe("/liveness", 6),
            "resources": resources,
            "volumeMounts": mounts,
            "securityContext": container_security()
        }),
    );

    if exporter_enabled(c) {
        containers.push(exporter(c)?);
    }

    let mut pod_spec = json!({
        "serviceAccountName": names::patroni(c.name),
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "securityContext": pod_security(),
        // Patroni demotes cleanly and hands over leadership on SIGTERM, given time.
        "terminationGracePeriodSeconds": 60,
        "containers": containers,
        "volumes": volumes
    });
    scheduling(c, &mut pod_spec)?;

    let mut claim = json!({
        "metadata": { "name": "pgdata", "labels": c.labels(component::DATABASE) },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": spec.storage.size } } }
    });
    if let Some(class) = &spec.storage.storage_class_name {
        claim["spec"]["storageClassName"] = json!(class);
    }

    let mut template_annotations = serde_json::Map::new();
    template_annotations.insert(
        super::CONFIG_HASH_ANNOTATION.into(),
        json!(out.patroni_local_config_hash),
    );
    if let Some(restart) = c.restart {
        template_annotations.insert(names::RESTART_ANNOTATION.into(), json!(restart));
    }
    out.stateful_sets.push(build(
        "StatefulSet",
        json!({
            "metadata": c.meta(names::statefulset(c.name), component::DATABASE),
            "spec": {
                "replicas": instances,
                "serviceName": names::pods_service(c.name),
                // Patroni orders the members itself; starting them together is faster.
                "podManagementPolicy": "Parallel",
                // pgpilot replaces outdated pods itself, replicas first and the primary
                // after a switchover (controller/rollout.rs); Kubernetes' own order
                // ignores which pod leads.
                "updateStrategy": { "type": "OnDelete" },
                "selector": { "matchLabels": c.selector(component::DATABASE) },
                "persistentVolumeClaimRetentionPolicy": { "whenDeleted": "Retain", "whenScaled": "Retain" },
                "template": {
                    "metadata": {
                        "labels": c.labels(component::DATABASE),
                        "annotations": template_annotations
                    },
                    "spec": pod_spec
                },
                "volumeClaimTemplates": [claim]
            }
        }),
    )?);

    if instances > 1 {
        out.pod_disruption_budgets.push(build(
            "PodDisruptionBudget",
            json!({
                "metadata": c.meta(names::statefulset(c.name), component::DATABASE),
                "spec": { "maxUnavailable": 1, "selector": { "matchLabels": c.selector(component::DATABASE) } }
            }),
        )?);
    }
    Ok(())
}

/// The Secret holding PostgreSQL's server certificate.
/// The REST API address a member publishes, which the other members call during leader
/// races and switchovers. With TLS, the pod's DNS name, which the server certificate
/// carries (`*.C-pods.NAMESPACE.svc`), so that they can check it; its IP otherwise.
fn restapi_address(c: &Cluster) -> String {
    let port = names::PATRONI_PORT;
    if c.spec.tls_enabled() {
        let pods = c.service_host(&names::pods_service(c.name));
        format!("$(PATRONI_NAME).{pods}:{port}")
    } else {
        format!("$(PATRONI_KUBERNETES_POD_IP):{port}")
    }
}

pub fn server_tls_secret(c: &Cluster) -> Result<String, RenderError> {
    need(&c.spec.tls, "spec.tls")?;
    c.spec
        .server_tls_secret(c.name)
        .ok_or(RenderError::NotResolved(
            "spec.tls.issuerRef or spec.tls.secretName",
        ))
}

/// postgres_exporter, connecting over the pod's loopback as the monitoring role.
fn exporter(c: &Cluster) -> Result<Value, RenderError> {
    let x = c
        .spec
        .monitoring
        .as_ref()
        .and_then(|m| m.exporter.as_ref())
        .ok_or(RenderError::NotResolved("spec.monitoring.exporter"))?;
    let port = *need(&x.port, "spec.monitoring.exporter.port")?;
    let sslmode = if c.spec.tls_enabled() {
        "require"
    } else {
        "disable"
    };
    Ok(json!({
        "name": "exporter",
        "image": need(&x.image, "spec.monitoring.exporter.image")?,
        "args": [format!("--web.listen-address=:{port}")],
        "env": [
            { "name": "DATA_SOURCE_URI", "value": format!("localhost:{}/postgres?sslmode={sslmode}", names::POSTGRES_PORT) },
            { "name": "DATA_SOURCE_USER", "value": names::MONITOR_USER },
            secret_env("DATA_SOURCE_PASS", &names::exporter_secret(c.name), "password")
        ],
        "ports": [{ "name": "metrics", "containerPort": port }],
        "readinessProbe": { "httpGet": { "path": "/", "port": port }, "periodSeconds": 15 },
        "resources": need(&x.resources, "spec.monitoring.exporter.resources")?,
        "securityContext": container_security()
    }))
}
