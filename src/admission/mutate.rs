//! `/mutate`: resolve the submitted spec and answer with the JSON Patch to it.

use kube::core::admission::AdmissionResponse;
use kube::core::response::Status;
use serde_json::Value;

use super::review::Review;
use super::validate::invalid;
use crate::config::Config;
use crate::resolve::resolve;
use crate::validate::validate_read;

pub(super) fn respond(review: &Review, config: &Config) -> AdmissionResponse {
    if !review.writes_spec() {
        return review.allow();
    }
    let objects = match review.objects() {
        Ok(objects) => objects,
        Err(why) => return review.reject(why),
    };
    // On UPDATE, derived defaults follow their inputs: `resolve` compares with the old spec.
    let old = objects.old.as_ref().map(|o| &o.spec);
    let resolved = resolve(&objects.read.cluster.spec, old, config);
    // A structural mistake leaves no object to patch: deny with every error at once, the
    // structural ones and those of the rest of the resolved spec.
    if !objects.read.errors.is_empty() {
        let mut cluster = objects.read.cluster.clone();
        cluster.spec = resolved;
        let outcome = validate_read(&objects.read, &cluster, objects.old.as_ref(), config);
        return review.deny(invalid(&cluster, &outcome.errors));
    }
    // Only the spec is replaced: metadata and status go back exactly as submitted.
    let resolved = match serde_json::to_value(&resolved) {
        Ok(spec) => with_spec(objects.raw, spec),
        Err(e) => return internal_error(review, format!("serializing the resolved spec: {e}")),
    };
    let patch = json_patch::diff(objects.raw, &resolved);
    if patch.0.is_empty() {
        return review.allow();
    }
    review
        .allow()
        .with_patch(patch)
        .unwrap_or_else(|e| internal_error(review, format!("serializing the patch: {e}")))
}

/// `object` with its `spec` replaced.
fn with_spec(object: &Value, spec: Value) -> Value {
    let mut out = object.clone();
    if let Value::Object(map) = &mut out {
        map.insert("spec".to_owned(), spec);
    }
    out
}

fn internal_error(review: &Review, message: String) -> AdmissionResponse {
    tracing::error!(uid = %review.request.uid, "{message}");
    review.deny(Status::failure(&message, "InternalError").with_code(500))
}
