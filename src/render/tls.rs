//! Certificate `C-tls` (cert-manager), when `tls.issuerRef` is set: the server certificate
//! for PostgreSQL and the pooler, valid for every Service name a client may use.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;

use super::{Cluster, RenderError, Rendered, component, need};
use crate::names;

pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    )
}

pub fn render(c: &Cluster, out: &mut Rendered) -> Result<(), RenderError> {
    let Some(issuer) = c.spec.tls.as_ref().and_then(|t| t.issuer_ref.as_ref()) else {
        return Ok(());
    };
    let name = names::tls_certificate(c.name);
    let mut dns = Vec::new();
    for service in [
        names::primary_service(c.name),
        names::replicas_service(c.name),
        names::pooler(c.name),
    ] {
        dns.push(service.clone());
        dns.push(format!("{service}.{}", c.namespace));
        dns.push(c.service_host(&service));
        dns.push(format!("{}.cluster.local", c.service_host(&service)));
    }
    dns.push(format!(
        "*.{}",
        c.service_host(&names::pods_service(c.name))
    ));
    let mut obj = DynamicObject::new(&name, &api_resource()).within(c.namespace);
    obj.metadata = c.meta(name.clone(), component::TLS);
    obj.data = json!({
        "spec": {
            "secretName": name,
            "commonName": names::primary_service(c.name),
            "dnsNames": dns,
            "usages": ["server auth", "digital signature", "key encipherment"],
            "privateKey": { "algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always" },
            "issuerRef": {
                "name": issuer.name,
                "kind": need(&issuer.kind, "spec.tls.issuerRef.kind")?,
                "group": need(&issuer.group, "spec.tls.issuerRef.group")?
            }
        }
    });
    out.certificates.push(obj);
    Ok(())
}
