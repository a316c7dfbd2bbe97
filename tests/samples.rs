//! The samples resolve to the checked-in snapshots, and the checked-in CRD matches the code.

use kube::CustomResourceExt;
use pgpilot::api::PostgresCluster;
use pgpilot::config::Config;
use pgpilot::{manifest, resolve, validate};

fn resolved_sample(name: &str) -> PostgresCluster {
    let path = format!(
        "{}/manifests/samples/{name}.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut clusters = manifest::from_yaml_stream(&text).unwrap();
    assert_eq!(clusters.len(), 1);
    let mut c = clusters.remove(0);
    c.spec = resolve::resolve(&c.spec, None, &Config::default());
    let outcome = validate::validate(&c, None);
    assert_eq!(outcome.errors, vec![], "{name} must be valid");
    c
}

#[test]
fn minimal_sample() {
    let c = resolved_sample("minimal");
    let warnings = validate::validate(&c, None).warnings;
    assert_eq!(
        warnings,
        [
            "spec.backup.pgbackrest.repos: no backup repository: the data cannot be restored if the volumes are lost",
            "spec.tls: no TLS: connections to PostgreSQL are not encrypted",
        ]
    );
    insta::assert_yaml_snapshot!("minimal", c);
}

#[test]
fn ha_backup_pooler_sample() {
    let c = resolved_sample("ha-backup-pooler");
    assert_eq!(validate::validate(&c, None).warnings, Vec::<String>::new());
    insta::assert_yaml_snapshot!("ha-backup-pooler", c);
}

#[test]
fn checked_in_crd_is_current() {
    let path = format!("{}/manifests/crd.yaml", env!("CARGO_MANIFEST_DIR"));
    let on_disk = std::fs::read_to_string(path).unwrap();
    let generated = serde_yaml::to_string(&PostgresCluster::crd()).unwrap();
    assert!(
        on_disk == generated,
        "manifests/crd.yaml is stale: run `make manifests`"
    );
}

/// A structural schema (what the API server requires): every node has a type (or an
/// explicit escape hatch), no `$ref`, and no types inside `anyOf`/`oneOf`/`allOf`.
#[test]
fn crd_schema_is_structural() {
    fn walk(node: &serde_json::Value, path: &str, problems: &mut Vec<String>) {
        let Some(obj) = node.as_object() else { return };
        if obj.contains_key("$ref") {
            problems.push(format!("{path}: $ref"));
        }
        let escape = obj.contains_key("x-kubernetes-preserve-unknown-fields")
            || obj.contains_key("x-kubernetes-int-or-string");
        if !obj.contains_key("type") && !escape {
            problems.push(format!("{path}: no type"));
        }
        for junction in ["anyOf", "oneOf", "allOf"] {
            for branch in obj
                .get(junction)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                if branch.get("type").is_some() && !obj.contains_key("x-kubernetes-int-or-string") {
                    problems.push(format!("{path}.{junction}: typed branch"));
                }
            }
        }
        for (k, child) in obj
            .get("properties")
            .and_then(|p| p.as_object())
            .into_iter()
            .flatten()
        {
            walk(child, &format!("{path}.{k}"), problems);
        }
        if let Some(items) = obj.get("items") {
            walk(items, &format!("{path}[]"), problems);
        }
        if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
            walk(extra, &format!("{path}{{}}"), problems);
        }
    }
    let crd = serde_json::to_value(PostgresCluster::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut problems = Vec::new();
    walk(schema, "", &mut problems);
    assert_eq!(problems, Vec::<String>::new());
    let conditions = &schema["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], serde_json::json!({}));
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "pgc");
}
