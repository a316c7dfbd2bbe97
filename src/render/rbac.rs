//! ServiceAccount, Role and RoleBinding `C-patroni`: what Patroni's Kubernetes DCS needs, and
//! nothing more. With `use_endpoints`, Patroni keeps the leader lock and the cluster config
//! in Endpoints, labels its own pod with its role, and creates the `C-config` Service that
//! keeps the config Endpoints from being garbage-collected.

use serde_json::json;

use super::{Cluster, RenderError, Rendered, build, component};
use crate::names;

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let name = names::patroni(c.name);
    let meta = c.meta(name.clone(), component::PATRONI);
    out.service_accounts
        .push(build("ServiceAccount", json!({ "metadata": meta }))?);
    out.roles.push(build(
        "Role",
        json!({
            "metadata": meta,
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints"],
                    "verbs": ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
                },
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "update", "patch"] },
                { "apiGroups": [""], "resources": ["services"], "verbs": ["create"] }
            ]
        }),
    )?);
    out.role_bindings.push(build(
        "RoleBinding",
        json!({
            "metadata": meta,
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
            "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": c.namespace }]
        }),
    )?);
    Ok(())
}
