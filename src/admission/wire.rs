//! The response as it goes back to the API server.
//!
//! kube's `AdmissionResponse` serializes its patch (`Vec<u8>`) as a JSON array of numbers
//! (kube-rs/kube#1781). The API's JSON form of a `[]byte` is a base64 string, which is also a
//! third of the size, so the review is written here from borrowed fields.

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use kube::core::admission::AdmissionResponse;
use kube::core::response::Status;
use serde::Serialize;

use super::review::{REVIEW_API_VERSION, REVIEW_KIND};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    /// Consulted only when the request is denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a Status>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

/// The `admission.k8s.io/v1` `AdmissionReview` carrying `response`.
pub fn to_json(response: &AdmissionResponse) -> Vec<u8> {
    let patch = response.patch.as_deref().map(|p| BASE64.encode(p));
    let review = Review {
        api_version: REVIEW_API_VERSION,
        kind: REVIEW_KIND,
        response: Response {
            uid: &response.uid,
            allowed: response.allowed,
            status: (!response.allowed).then_some(&response.result),
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            audit_annotations: &response.audit_annotations,
            warnings: response.warnings.as_deref().unwrap_or_default(),
        },
    };
    // Strings, booleans and integers only: serializing into memory cannot fail.
    serde_json::to_vec(&review).expect("an AdmissionReview serializes")
}
