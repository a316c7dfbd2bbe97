//! NetworkPolicies `C` (the instances) and `C-repo-host`, when `networkPolicy.enabled`.
//!
//! Clients reach PostgreSQL (and Prometheus the exporter) from anywhere, as the Services
//! promise; the ports only pgpilot's own parts use are closed to everything else: Patroni's
//! API admits the cluster's instances (leader races, failsafe checks) and the operator's
//! pods, pgBackRest's TLS server the cluster's own pods (repository host, backup Jobs, the
//! other instances) and, on the repository host, restore Jobs of clones in the namespace.
//! The kubelet's probes come from the node, which network plugins let through.

use serde_json::{Value, json};

use super::secrets::exporter_enabled;
use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::names;

/// The label every operator pod carries (manifests/deployment.yaml).
const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "pgpilot");

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let np = need(&c.spec.network_policy, "spec.networkPolicy")?;
    if !*need(&np.enabled, "spec.networkPolicy.enabled")? {
        return Ok(());
    }
    let operator_ns = need(
        &np.operator_namespace,
        "spec.networkPolicy.operatorNamespace",
    )?;
    let tcp = |port: i32| json!({ "protocol": "TCP", "port": port });
    let own_pods = json!({ "podSelector": { "matchLabels": { names::CLUSTER_LABEL: c.name } } });

    let mut open = vec![tcp(names::POSTGRES_PORT)];
    if exporter_enabled(c) {
        let exporter = c.spec.monitoring.as_ref().and_then(|m| m.exporter.as_ref());
        let port = *need(
            &exporter.and_then(|x| x.port),
            "spec.monitoring.exporter.port",
        )?;
        open.push(tcp(port));
    }
    let mut ingress = vec![
        json!({ "ports": open }),
        json!({
            "ports": [tcp(names::PATRONI_PORT)],
            "from": [
                { "podSelector": { "matchLabels": c.selector(component::DATABASE) } },
                {
                    "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": operator_ns } },
                    "podSelector": { "matchLabels": { OPERATOR_POD_LABEL.0: OPERATOR_POD_LABEL.1 } }
                }
            ]
        }),
    ];
    let repositories = !c.spec.backup_repos().is_empty();
    if repositories {
        ingress.push(json!({ "ports": [tcp(names::PGBACKREST_PORT)], "from": [own_pods] }));
    }
    out.network_policies.push(policy(
        c,
        names::statefulset(c.name),
        component::DATABASE,
        ingress,
    )?);

    if repositories {
        let clones = json!({ "podSelector": { "matchLabels": {
            "app.kubernetes.io/component": component::RESTORE,
            "app.kubernetes.io/managed-by": "pgpilot"
        } } });
        out.network_policies.push(policy(
            c,
            names::repo_host(c.name),
            component::REPO_HOST,
            vec![json!({ "ports": [tcp(names::PGBACKREST_PORT)], "from": [own_pods, clones] })],
        )?);
    }
    Ok(())
}

fn policy(
    c: &Cluster,
    name: String,
    selected: &str,
    ingress: Vec<Value>,
) -> Result<k8s_openapi::api::networking::v1::NetworkPolicy, RenderError> {
    build(
        "NetworkPolicy",
        json!({
            "metadata": c.meta(name, selected),
            "spec": {
                "podSelector": { "matchLabels": c.selector(selected) },
                "policyTypes": ["Ingress"],
                "ingress": ingress
            }
        }),
    )
}
