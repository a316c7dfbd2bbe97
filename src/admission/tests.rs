//! The shell's own decisions; the full round trips over TLS are in tests/webhook_tls.rs.

use serde_json::{Value, json};

use super::*;

fn review(operation: &str, sub_resource: Option<&str>, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "pgpilot.io", "version": "v1", "kind": "PostgresCluster"},
            "resource": {"group": "pgpilot.io", "version": "v1", "resource": "postgresclusters"},
            "subResource": sub_resource,
            "operation": operation,
            "userInfo": {"username": "test"},
            "object": object,
            "oldObject": if operation == "UPDATE" { object.clone() } else { Value::Null },
        }
    }))
    .unwrap()
}

fn cluster(spec: Value) -> Value {
    json!({"apiVersion": "pgpilot.io/v1", "kind": "PostgresCluster", "metadata": {"name": "db"}, "spec": spec})
}

/// The answer as it goes on the wire.
fn wire(answer: Answer) -> Value {
    match answer {
        Answer::Reviewed(r) => serde_json::from_slice(&to_json(&r)).unwrap(),
        Answer::BadRequest(m) => panic!("bad request: {m}"),
    }
}

#[test]
fn a_single_error_is_listed_without_brackets() {
    let bad = cluster(json!({"instances": 0, "storage": {"size": "1Gi"}}));
    let answer = wire(validate(
        &review("CREATE", None, bad),
        &Config::default(),
        None,
    ));
    assert_eq!(
        answer["response"]["status"]["message"],
        "PostgresCluster.pgpilot.io \"db\" is invalid: spec.instances: Invalid value: 0: must be between 1 and 16"
    );
}

#[test]
fn an_allowed_answer_carries_no_status_and_a_base64_patch() {
    let answer = wire(mutate(
        &review("CREATE", None, cluster(json!({"storage": {"size": "1Gi"}}))),
        &Config::default(),
    ));
    let response = &answer["response"];
    assert_eq!(response["uid"], "u-1");
    assert_eq!(response["allowed"], true);
    assert!(response.get("status").is_none(), "{response}");
    assert_eq!(response["patchType"], "JSONPatch");
    assert!(
        response["patch"].as_str().unwrap().starts_with("W3"),
        "base64 of '[{{'"
    );
}

#[test]
fn subresource_writes_are_allowed_untouched() {
    // Not even read: a status update carries no spec to resolve or validate.
    let broken = json!({"apiVersion": "pgpilot.io/v1", "kind": "PostgresCluster", "spec": 1});
    for answer in [
        mutate(
            &review("UPDATE", Some("status"), broken.clone()),
            &Config::default(),
        ),
        validate(
            &review("UPDATE", Some("status"), broken.clone()),
            &Config::default(),
            None,
        ),
    ] {
        assert_eq!(answer.verdict(), Verdict::Allowed);
    }
}

#[test]
fn verdicts_name_the_outcome() {
    let good = review("CREATE", None, cluster(json!({"storage": {"size": "1Gi"}})));
    assert_eq!(
        mutate(&good, &Config::default()).verdict(),
        Verdict::Patched
    );
    let bad = review(
        "CREATE",
        None,
        cluster(json!({"storage": {"size": "1Gi"}, "instances": 99})),
    );
    assert_eq!(
        validate(&bad, &Config::default(), None).verdict(),
        Verdict::Denied
    );
    assert_eq!(
        validate(b"{", &Config::default(), None).verdict(),
        Verdict::BadRequest
    );
}

#[test]
fn only_a_create_restoring_from_a_named_cluster_asks_for_a_lookup() {
    let restoring = |restore: Value| {
        let mut c = cluster(json!({"storage": {"size": "1Gi"}, "bootstrap": {"restore": restore}}));
        c["metadata"]["namespace"] = json!("shop");
        c
    };
    let from_src = restoring(json!({"cluster": "src", "repo": "repo1"}));
    let mut create = review("CREATE", None, from_src.clone());
    assert_eq!(
        restore_source(&create),
        None,
        "the review names no namespace"
    );
    let mut r: Value = serde_json::from_slice(&create).unwrap();
    r["request"]["namespace"] = json!("shop");
    create = serde_json::to_vec(&r).unwrap();
    assert_eq!(
        restore_source(&create),
        Some(("shop".to_owned(), "src".to_owned()))
    );
    let mut update = r.clone();
    update["request"]["operation"] = json!("UPDATE");
    assert_eq!(restore_source(&serde_json::to_vec(&update).unwrap()), None);
    let mut inline = r.clone();
    inline["request"]["object"]["spec"]["bootstrap"]["restore"]["repository"] =
        json!({"s3": {"bucket": "b", "endpoint": "e", "region": "r"}});
    assert_eq!(restore_source(&serde_json::to_vec(&inline).unwrap()), None);
    let mut hostile = r.clone();
    hostile["request"]["object"]["spec"]["bootstrap"]["restore"]["cluster"] =
        json!("../../secrets/x");
    assert_eq!(restore_source(&serde_json::to_vec(&hostile).unwrap()), None);
    for body in [
        &b"\"bootstrap\"{"[..],
        b"[\"bootstrap\"]",
        b"{\"request\": \"bootstrap\"}",
    ] {
        assert_eq!(restore_source(body), None);
    }
    assert_eq!(
        restore_source(&review("CREATE", None, cluster(json!({"instances": 2})))),
        None
    );
}
