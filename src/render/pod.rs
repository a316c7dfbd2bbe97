//! Pieces every pgpilot pod shares: the restricted security contexts and scheduling.

use serde_json::{Value, json};

use super::{Cluster, POSTGRES_UID, RenderError, component, need};
use crate::api::AntiAffinity;

/// Pod-level security: the `restricted` Pod Security Standard.
pub fn pod_security() -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": POSTGRES_UID,
        "runAsGroup": POSTGRES_UID,
        "fsGroup": POSTGRES_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": { "type": "RuntimeDefault" }
    })
}

/// Container-level security: no privilege escalation, no capabilities, read-only root.
pub fn container_security() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] }
    })
}

/// `/tmp` as a small in-memory volume: the root filesystem is read-only.
pub fn tmp_volume() -> Value {
    json!({ "name": "tmp", "emptyDir": { "medium": "Memory", "sizeLimit": "64Mi" } })
}

/// Affinity, node selector, tolerations, spread and priority for instance pods.
pub fn scheduling(c: &Cluster, pod_spec: &mut Value) -> Result<(), RenderError> {
    let s = need(&c.spec.scheduling, "spec.scheduling")?;
    let selector = json!({ "matchLabels": c.selector(component::DATABASE) });
    let term = json!({ "labelSelector": selector, "topologyKey": "kubernetes.io/hostname" });
    match need(&s.anti_affinity, "spec.scheduling.antiAffinity")? {
        AntiAffinity::Preferred => {
            pod_spec["affinity"] = json!({ "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{ "weight": 100, "podAffinityTerm": term }]
            }});
        }
        AntiAffinity::Required => {
            pod_spec["affinity"] = json!({ "podAntiAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [term] } });
        }
        AntiAffinity::None => {}
    }
    if let Some(ns) = s.node_selector.as_ref().filter(|m| !m.is_empty()) {
        pod_spec["nodeSelector"] = json!(ns);
    }
    if let Some(t) = s.tolerations.as_ref().filter(|t| !t.is_empty()) {
        pod_spec["tolerations"] = json!(t);
    }
    if let Some(tsc) = s
        .topology_spread_constraints
        .as_ref()
        .filter(|t| !t.is_empty())
    {
        // A constraint without a selector spreads this cluster's instances.
        let with_selector: Vec<Value> = tsc
            .iter()
            .map(|t| {
                let mut v = json!(t);
                if t.label_selector.is_none() {
                    v["labelSelector"] = selector.clone();
                }
                v
            })
            .collect();
        pod_spec["topologySpreadConstraints"] = json!(with_selector);
    }
    if let Some(pc) = &s.priority_class_name {
        pod_spec["priorityClassName"] = json!(pc);
    }
    Ok(())
}

/// An environment variable from a Secret key.
pub fn secret_env(name: &str, secret: &str, key: &str) -> Value {
    json!({ "name": name, "valueFrom": { "secretKeyRef": { "name": secret, "key": key } } })
}

pub fn field_env(name: &str, path: &str) -> Value {
    json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } })
}
