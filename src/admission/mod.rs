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

pub use review::{Answer, MAX_REVIEW_BYTES, Verdict};
pub use wire::to_json;

/// `POST /mutate`: the JSON Patch that turns the submitted object into its resolved form.
pub fn mutate(body: &[u8], config: &Config) -> Answer {
    review::answer(body, |r| mutate::respond(r, config))
}

/// `POST /validate`: allowed with warnings, or denied with every field error.
pub fn validate(body: &[u8], config: &Config) -> Answer {
    review::answer(body, |r| validate::respond(r, config))
}

#[cfg(test)]
mod tests;
