//! AdmissionReviews built from the samples, and readers for the answers.

use base64::Engine;
use serde_json::{Value, json};

pub const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/samples");

/// Every sample as JSON, the way the API server hands it to the webhook.
pub fn samples() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(SAMPLES)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, serde_yaml::from_str(&text).unwrap())
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no samples in {SAMPLES}");
    out
}

pub fn sample(name: &str) -> Value {
    let text = std::fs::read_to_string(format!("{SAMPLES}/{name}")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// A v1 AdmissionReview as the API server sends it for a postgresclusters request.
pub fn review(uid: &str, operation: &str, object: Option<&Value>, old: Option<&Value>) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "pgpilot.io", "version": "v1", "kind": "PostgresCluster"},
            "resource": {"group": "pgpilot.io", "version": "v1", "resource": "postgresclusters"},
            "requestKind": {"group": "pgpilot.io", "version": "v1", "kind": "PostgresCluster"},
            "requestResource": {"group": "pgpilot.io", "version": "v1", "resource": "postgresclusters"},
            "name": object.or(old).and_then(|o| o["metadata"]["name"].as_str()).unwrap_or(""),
            "namespace": "default",
            "operation": operation,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "oldObject": old,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    })
}

pub fn body(review: &Value) -> Vec<u8> {
    serde_json::to_vec(review).unwrap()
}

/// The `response` of an answer, after checking the envelope.
pub fn response(answer: &[u8], uid: &str) -> Value {
    let review: Value = serde_json::from_slice(answer).unwrap_or_else(|e| {
        panic!(
            "the answer is not JSON ({e}): {}",
            String::from_utf8_lossy(answer)
        )
    });
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1", "{review}");
    assert_eq!(review["kind"], "AdmissionReview", "{review}");
    let response = review["response"].clone();
    assert_eq!(response["uid"], uid, "{review}");
    assert!(response["allowed"].is_boolean(), "{review}");
    response
}

/// The JSON Patch of a response (none: empty), base64-decoded.
pub fn patch(response: &Value) -> json_patch::Patch {
    let Some(encoded) = response["patch"].as_str() else {
        assert!(
            response.get("patch").is_none(),
            "patch is not a string: {response}"
        );
        return json_patch::Patch(vec![]);
    };
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("the patch is base64");
    serde_json::from_slice(&bytes).expect("the patch is a JSON Patch")
}

/// `object` with the response's patch applied.
pub fn patched(object: &Value, response: &Value) -> Value {
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch(response)).expect("the patch applies");
    out
}
