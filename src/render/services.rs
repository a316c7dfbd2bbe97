//! Services: `C-primary` and `C-replicas` select on the role label Patroni keeps on its pods;
//! `C-pods` is the StatefulSet's headless Service (stable DNS names for every member, also
//! before they are ready, which replicas need to bootstrap).

use serde_json::json;

use super::{Cluster, RenderError, Rendered, build, component, need};
use crate::names;

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let svc = need(&c.spec.service, "spec.service")?;
    let type_ = need(&svc.type_, "spec.service.type")?;
    let port = json!([{ "name": "postgres", "port": names::POSTGRES_PORT, "targetPort": names::POSTGRES_PORT, "protocol": "TCP" }]);
    let role_selector = |role: &str| {
        let mut s = c.selector(component::DATABASE);
        s.insert(names::ROLE_LABEL.into(), role.into());
        s
    };

    let mut primary_meta = c.meta(names::primary_service(c.name), component::DATABASE);
    primary_meta.annotations = svc.annotations.clone().filter(|a| !a.is_empty());
    let mut primary = json!({
        "metadata": primary_meta,
        "spec": { "type": type_, "selector": role_selector(names::ROLE_PRIMARY), "ports": port }
    });
    let ranges = svc
        .load_balancer_source_ranges
        .as_deref()
        .unwrap_or_default();
    if !ranges.is_empty() {
        primary["spec"]["loadBalancerSourceRanges"] = json!(ranges);
    }
    out.services.push(build("Service", primary)?);

    out.services.push(build(
        "Service",
        json!({
            "metadata": c.meta(names::replicas_service(c.name), component::DATABASE),
            "spec": { "type": "ClusterIP", "selector": role_selector(names::ROLE_REPLICA), "ports": port }
        }),
    )?);

    let mut pod_ports = port.as_array().cloned().unwrap_or_default();
    pod_ports.push(json!({ "name": "patroni", "port": names::PATRONI_PORT, "targetPort": names::PATRONI_PORT, "protocol": "TCP" }));
    if !c.spec.backup_repos().is_empty() {
        pod_ports.push(json!({ "name": "pgbackrest", "port": names::PGBACKREST_PORT, "targetPort": names::PGBACKREST_PORT, "protocol": "TCP" }));
    }
    out.services.push(build(
        "Service",
        json!({
            "metadata": c.meta(names::pods_service(c.name), component::DATABASE),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": c.selector(component::DATABASE),
                "ports": pod_ports
            }
        }),
    )?);
    Ok(())
}
