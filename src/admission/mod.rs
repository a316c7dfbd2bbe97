//! Admission: an `AdmissionReview` body in, an answer out, around the pure `resolve` and
//! `validate`.
//!
//! A thin, total shell: every body gets an answer and none makes it panic. A body that is
//! not an `admission.k8s.io/v1` review with a `request` and a `uid` is a bad request (HTTP
//! 400: there is no uid to answer to). A readable review whose object is broken, or is not a
//! `pgpilot.io/v1` PostgresCluster, is *denied* with its uid echoed and the reason in the
//! message, so `kubectl` shows the user what is wrong instead of a webhook failure.

mod mutate;
mod review;
mod validate;
mod wire;

use crate::config::Config;
use crate::validate::SourceLookup;

pub use review::{Answer, MAX_REVIEW_BYTES, Verdict};
pub use wire::to_json;

/// `POST /mutate`: the JSON Patch that turns the submitted object into its resolved form.
pub fn mutate(body: &[u8], config: &Config) -> Answer {
    review::answer(body, |r| mutate::respond(r, config))
}

/// `POST /validate`: allowed with warnings, or denied with every field error. `source`:
/// the cluster a created cluster is restored from, when the caller looked it up (see
/// [`restore_source`]).
pub fn validate(body: &[u8], config: &Config, source: Option<&SourceLookup>) -> Answer {
    review::answer(body, |r| validate::respond(r, config, source))
}

/// The namespace and name of the cluster to look up for a review of a CREATE whose
/// `spec.bootstrap.restore` reads another cluster's spec (names a cluster and no inline
/// repository); `None` for anything else, which a scan for `"bootstrap"` settles without
/// parsing for almost every body.
pub fn restore_source(body: &[u8]) -> Option<(String, String)> {
    const KEY: &[u8] = b"\"bootstrap\"";
    if !body.windows(KEY.len()).any(|w| w == KEY) {
        return None;
    }
    let review: serde_json::Value = serde_json::from_slice(body).ok()?;
    let request = &review["request"];
    if request["operation"] != "CREATE" {
        return None;
    }
    let restore = &request["object"]["spec"]["bootstrap"]["restore"];
    if !restore["repository"].is_null() {
        return None;
    }
    // Names validation would refuse are not looked up (validation says why).
    let namespace = request["namespace"]
        .as_str()
        .filter(|n| crate::names::is_dns1123_label(n))?;
    let cluster = restore["cluster"]
        .as_str()
        .filter(|c| crate::names::is_dns1035_label(c))?;
    Some((namespace.to_owned(), cluster.to_owned()))
}

#[cfg(test)]
mod tests;
