//! `/validate`: every field error at once, as Kubernetes reports an invalid object.

use kube::Resource;
use kube::core::admission::AdmissionResponse;
use kube::core::response::{Status, StatusCause, StatusDetails};

use super::review::Review;
use crate::api::PostgresCluster;
use crate::config::Config;
use crate::validate::{FieldError, SourceLookup, restore_source, validate_read};

pub(super) fn respond(
    review: &Review,
    config: &Config,
    source: Option<&SourceLookup>,
) -> AdmissionResponse {
    if !review.writes_spec() {
        return review.allow();
    }
    let objects = match review.objects() {
        Ok(objects) => objects,
        Err(why) => return review.reject(why),
    };
    let mut outcome = validate_read(
        &objects.read,
        &objects.read.cluster,
        objects.old.as_ref(),
        config,
    );
    if let Some(found) = source
        && objects.old.is_none()
    {
        let more = restore_source(&objects.read.cluster, found);
        outcome.errors.extend(more.errors);
        outcome.warnings.extend(more.warnings);
    }
    let mut response = if outcome.is_valid() {
        review.allow()
    } else {
        review.deny(invalid(&objects.read.cluster, &outcome.errors))
    };
    // kubectl prints warnings whether the object is admitted or not.
    if !outcome.warnings.is_empty() {
        response.warnings = Some(outcome.warnings);
    }
    response
}

/// The `Status` of Kubernetes' own `NewInvalid`: code 422, reason `Invalid`, and
/// `PostgresCluster.pgpilot.io "NAME" is invalid: [err1, err2]` with one cause per error.
pub(super) fn invalid(cluster: &PostgresCluster, errors: &[FieldError]) -> Status {
    let kind = PostgresCluster::kind(&());
    let group = PostgresCluster::group(&());
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    // Go's error aggregate prints a single error bare, several in brackets.
    let listed = match list.as_slice() {
        [one] => one.clone(),
        _ => format!("[{}]", list.join(", ")),
    };
    let causes = errors
        .iter()
        .map(|e| StatusCause {
            reason: e.reason().to_owned(),
            message: e.message(),
            field: e.path.clone(),
        })
        .collect();
    let details = StatusDetails {
        name: name.clone(),
        group: group.to_string(),
        kind: kind.to_string(),
        uid: String::new(),
        causes,
        retry_after_seconds: 0,
    };
    Status::failure(
        &format!("{kind}.{group} {name:?} is invalid: {listed}"),
        "Invalid",
    )
    .with_code(422)
    .with_details(details)
}
