//! The CRD alone in a real API server, no webhook: the schema is accepted as structural,
//! the CEL transition rules compile and fire, `kubectl explain` shows our descriptions, and
//! the install manifests pass a server-side dry run.

mod e2e;

use std::sync::LazyLock;

use e2e::{Harness, Setup, squash};
use kube::CustomResourceExt;
use pgpilot::api::PostgresCluster;

static E2E: LazyLock<Harness> = LazyLock::new(|| Harness::start(Setup::CrdOnly));

fn db(spec: &str) -> String {
    format!(
        "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata:\n  name: db\nspec:\n{spec}"
    )
}

#[test]
fn the_crd_is_established_with_the_schema_as_written() {
    let run = E2E
        .kubectl(&["get", "crd", "postgresclusters.pgpilot.io", "-o", "json"])
        .success();
    let stored: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let conditions = stored["status"]["conditions"]
        .as_array()
        .expect("conditions");
    let status = |t: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| c["status"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        status("NamesAccepted").as_deref(),
        Some("True"),
        "{conditions:#?}"
    );
    assert_eq!(
        status("Established").as_deref(),
        Some("True"),
        "{conditions:#?}"
    );
    assert_eq!(status("NonStructuralSchema"), None, "{conditions:#?}");
    // Nothing pruned or rewritten: the API server keeps the schema the code generates.
    let ours = serde_json::to_value(PostgresCluster::crd()).unwrap();
    assert_eq!(stored["spec"]["versions"], ours["spec"]["versions"]);
}

/// Applies `before` then `after` in a fresh namespace; returns the second run.
fn update(ns: &str, before: &str, after: &str) -> e2e::Run {
    E2E.namespace(ns);
    E2E.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], before)
        .success();
    E2E.kubectl_stdin(&["apply", "-n", ns, "-f", "-"], after)
}

#[test]
fn cel_rejects_shrinking_storage_and_allows_growing_it() {
    let run = update(
        "cel-shrink",
        &db("  storage:\n    size: 10Gi\n"),
        &db("  storage:\n    size: 9500Mi\n"),
    )
    .failure();
    assert!(
        run.stderr.contains(
            r#"The PostgresCluster "db" is invalid: spec.storage: Invalid value: "object": storage.size may not shrink"#
        ),
        "{run}"
    );
    let stored = E2E.stored("cel-shrink", "db").unwrap();
    assert_eq!(stored.spec.storage.size.0, "10Gi");

    E2E.kubectl_stdin(
        &["apply", "-n", "cel-shrink", "-f", "-"],
        &db("  storage:\n    size: 20Gi\n"),
    )
    .success();
    assert_eq!(
        E2E.stored("cel-shrink", "db").unwrap().spec.storage.size.0,
        "20Gi"
    );
}

#[test]
fn cel_rejects_changing_the_storage_class() {
    let run = update(
        "cel-class",
        &db("  storage:\n    size: 10Gi\n    storageClassName: standard\n"),
        &db("  storage:\n    size: 10Gi\n    storageClassName: fast\n"),
    )
    .failure();
    assert!(
        run.stderr.contains(
            r#"spec.storage: Invalid value: "object": storage.storageClassName is immutable"#
        ),
        "{run}"
    );
    let stored = E2E.stored("cel-class", "db").unwrap();
    assert_eq!(
        stored.spec.storage.storage_class_name.as_deref(),
        Some("standard")
    );
}

#[test]
fn cel_rejects_setting_a_class_where_the_cluster_default_was_stored() {
    // `resolve` stores an explicit null for "the cluster default"; CEL's has() is false
    // for it, so the rule compares presence as well as value.
    let run = update(
        "cel-null-class",
        &db("  storage:\n    size: 10Gi\n    storageClassName: null\n"),
        &db("  storage:\n    size: 10Gi\n    storageClassName: fast\n"),
    )
    .failure();
    assert!(
        run.stderr.contains(
            r#"spec.storage: Invalid value: "object": storage.storageClassName is immutable"#
        ),
        "{run}"
    );
}

#[test]
fn cel_rejects_changing_the_major_version_and_allows_other_updates() {
    let run = update(
        "cel-version",
        &db("  postgresVersion: 17\n  storage:\n    size: 10Gi\n"),
        &db("  postgresVersion: 18\n  storage:\n    size: 10Gi\n"),
    )
    .failure();
    assert!(
        run.stderr.contains(
            r#"spec.postgresVersion: Invalid value: "integer": postgresVersion is immutable; a major upgrade needs its own procedure"#
        ),
        "{run}"
    );
    assert_eq!(
        E2E.stored("cel-version", "db")
            .unwrap()
            .spec
            .postgres_version,
        Some(17)
    );

    // The transition rules let a normal update through.
    E2E.kubectl_stdin(
        &["apply", "-n", "cel-version", "-f", "-"],
        &db("  postgresVersion: 17\n  instances: 3\n  storage:\n    size: 10Gi\n"),
    )
    .success();
    assert_eq!(
        E2E.stored("cel-version", "db").unwrap().spec.instances,
        Some(3)
    );
}

#[test]
fn the_schema_rejects_wrong_types_and_unknown_enum_values() {
    E2E.namespace("schema");
    let run = E2E
        .kubectl_stdin(
            &["apply", "-n", "schema", "-f", "-"],
            // `on` is a boolean in kubectl's YAML 1.1: the reason the modes are not on/off.
            &db("  instances: two\n  storage:\n    size: 10Gi\n  patroni:\n    synchronousMode: on\n  service:\n    type: Internal\n"),
        )
        .failure();
    for expected in [
        r#"spec.instances: Invalid value: "string": spec.instances in body must be of type integer: "string""#,
        r#"spec.patroni.synchronousMode: Invalid value: "boolean": spec.patroni.synchronousMode in body must be of type string: "boolean""#,
        r#"spec.service.type: Unsupported value: "Internal""#,
    ] {
        assert!(run.stderr.contains(expected), "no {expected:?} in\n{run}");
    }
    assert!(
        E2E.stored("schema", "db").is_none(),
        "nothing may be stored"
    );
}

#[test]
fn explain_shows_the_descriptions() {
    let run = E2E.kubectl(&["explain", "pgc.spec.patroni"]).success();
    let shown = squash(&run.stdout);
    let crd = serde_json::to_value(PostgresCluster::crd()).unwrap();
    let patroni = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["patroni"];
    let mut descriptions = vec![patroni["description"].as_str().expect("a description")];
    let fields = patroni["properties"].as_object().expect("patroni's fields");
    assert!(fields.contains_key("loopWait") && fields.contains_key("synchronousMode"));
    for (name, field) in fields {
        assert!(
            shown.contains(&format!("{name}\t")) || shown.contains(&format!(" {name} <")),
            "no field {name} in\n{}",
            run.stdout
        );
        descriptions.push(
            field["description"]
                .as_str()
                .expect("every field is described"),
        );
    }
    for description in descriptions {
        assert!(
            shown.contains(&squash(description)),
            "{description:?} is not in\n{}",
            run.stdout
        );
    }
}
/// `kubectl apply --dry-run=server -k manifests/`: every object the API server has a kind
/// for is accepted. cert-manager's kinds are left out: its CRDs are not installed here.
#[test]
fn the_install_manifests_pass_a_server_dry_run() {
    let kustomized = E2E.kubectl(&["kustomize", "manifests/"]).success().stdout;
    let documents: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&kustomized)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let (cert_manager, known): (Vec<_>, Vec<_>) = documents.into_iter().partition(|d| {
        d["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("cert-manager.io/"))
    });
    assert!(
        !cert_manager.is_empty(),
        "the manifests issue their certificates with cert-manager"
    );
    let kinds = |docs: &[serde_yaml::Value]| -> Vec<String> {
        docs.iter()
            .map(|d| d["kind"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    for kind in [
        "CustomResourceDefinition",
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert!(
            kinds(&known).iter().any(|k| k == kind),
            "no {kind} in the manifests"
        );
    }

    // A dry run creates nothing, so the objects inside the namespace need it to exist.
    let namespace = known
        .iter()
        .find(|d| d["kind"] == "Namespace")
        .and_then(|d| d["metadata"]["name"].as_str())
        .expect("a Namespace");
    let create = E2E.kubectl(&["create", "namespace", namespace]);
    assert!(
        create.code == Some(0) || create.stderr.contains("AlreadyExists"),
        "{create}"
    );

    let stream: String = known
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect();
    let run = E2E
        .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], &stream)
        .success();
    let accepted: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .collect();
    assert_eq!(accepted.len(), known.len(), "{run}");

    // The command exactly as a user types it fails only on cert-manager's kinds.
    let literal = E2E
        .kubectl(&["apply", "--dry-run=server", "-k", "manifests/"])
        .failure();
    let mut unmapped = 0;
    for line in literal.stderr.lines() {
        if line.starts_with("Warning: ") || line == "ensure CRDs are installed first" {
            continue;
        }
        assert!(
            line.starts_with("resource mapping not found for name: ")
                && line.contains(r#"in version "cert-manager.io/v1""#),
            "an unexpected failure: {line}\n{literal}"
        );
        unmapped += 1;
    }
    assert_eq!(unmapped, cert_manager.len(), "{literal}");
    assert_eq!(
        literal
            .stdout
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count(),
        known.len(),
        "{literal}"
    );
}
