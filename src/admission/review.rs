//! Reading an `AdmissionReview` from untrusted bytes, and the shapes of the answer.

use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::core::response::Status;
use serde_json::Value;

use crate::api::PostgresCluster;
use crate::manifest;

/// The API server never sends more than 3 MiB (its own request limit); the HTTP layer
/// rejects larger bodies before they are read.
pub const MAX_REVIEW_BYTES: usize = 3 << 20;

pub(super) const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
pub(super) const REVIEW_KIND: &str = "AdmissionReview";

/// The answer to one request body.
#[derive(Debug)]
pub enum Answer {
    /// An `AdmissionReview` response (HTTP 200), allowed or denied.
    Reviewed(Box<AdmissionResponse>),
    /// The body is not a review we can answer (HTTP 400); the text says why.
    BadRequest(String),
}

/// How a request ended, as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Patched,
    Denied,
    BadRequest,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Patched => "patched",
            Verdict::Denied => "denied",
            Verdict::BadRequest => "bad_request",
        }
    }
}

impl Answer {
    pub fn verdict(&self) -> Verdict {
        match self {
            Answer::Reviewed(r) if !r.allowed => Verdict::Denied,
            Answer::Reviewed(r) if r.patch.is_some() => Verdict::Patched,
            Answer::Reviewed(_) => Verdict::Allowed,
            Answer::BadRequest(_) => Verdict::BadRequest,
        }
    }
}

/// A review request. The objects are kept as raw JSON: kube's `AdmissionRequest` would
/// fail the whole review on a broken object, and then there would be no uid to deny.
pub struct Review {
    pub(super) request: AdmissionRequest<DynamicObject>,
    object: Option<Value>,
    old_object: Option<Value>,
}

/// Why a body could not become a `Review`.
enum Unreadable {
    /// Not a review at all: nothing to echo a uid to.
    BadRequest(String),
    /// A review with a uid whose other fields are broken: denied, uid echoed.
    Denied(Box<AdmissionResponse>),
}

/// Reads `body` and lets `respond` answer a readable review.
pub(super) fn answer(body: &[u8], respond: impl FnOnce(&Review) -> AdmissionResponse) -> Answer {
    match Review::read(body) {
        Ok(review) => Answer::Reviewed(Box::new(respond(&review))),
        Err(Unreadable::Denied(response)) => Answer::Reviewed(response),
        Err(Unreadable::BadRequest(message)) => Answer::BadRequest(message),
    }
}

impl Review {
    fn read(body: &[u8]) -> Result<Review, Unreadable> {
        let bad = |message: String| Unreadable::BadRequest(message);
        if body.len() > MAX_REVIEW_BYTES {
            return Err(bad(format!(
                "the body is larger than {MAX_REVIEW_BYTES} bytes"
            )));
        }
        let review: Value =
            serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        let Value::Object(mut review) = review else {
            return Err(bad(format!(
                "expected an {REVIEW_API_VERSION} {REVIEW_KIND} object"
            )));
        };
        let api_version = review.get("apiVersion").and_then(Value::as_str);
        let kind = review.get("kind").and_then(Value::as_str);
        if api_version != Some(REVIEW_API_VERSION) || kind != Some(REVIEW_KIND) {
            return Err(bad(format!(
                "expected apiVersion {REVIEW_API_VERSION} and kind {REVIEW_KIND} (set admissionReviewVersions: [v1]), found apiVersion {:?} and kind {:?}",
                api_version.unwrap_or(""),
                kind.unwrap_or("")
            )));
        }
        let mut request = match review.remove("request") {
            Some(Value::Object(r)) => r,
            None | Some(Value::Null) => {
                return Err(bad(format!("the {REVIEW_KIND} has no request")));
            }
            Some(_) => return Err(bad("request: expected an object".into())),
        };
        let uid = match request.get("uid") {
            Some(Value::String(uid)) if !uid.is_empty() => uid.clone(),
            _ => {
                return Err(bad(
                    "request.uid: expected a non-empty string to answer to".into()
                ));
            }
        };
        let object = request.remove("object").filter(|v| !v.is_null());
        let old_object = request.remove("oldObject").filter(|v| !v.is_null());
        let request: AdmissionRequest<DynamicObject> =
            serde_path_to_error::deserialize(Value::Object(request)).map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "request".to_owned()
                } else {
                    format!("request.{path}")
                };
                let message = format!("{field}: {}", e.into_inner());
                Unreadable::Denied(Box::new(deny_unreadable(uid, message)))
            })?;
        Ok(Review {
            request,
            object,
            old_object,
        })
    }

    /// Whether the review writes a spec: CREATE or UPDATE of the object itself. DELETE and
    /// CONNECT, and writes to a subresource (`status`), have nothing to resolve or validate.
    pub fn writes_spec(&self) -> bool {
        let subresource = self.request.sub_resource.as_deref().unwrap_or("");
        matches!(
            self.request.operation,
            Operation::Create | Operation::Update
        ) && subresource.is_empty()
    }

    pub fn allow(&self) -> AdmissionResponse {
        AdmissionResponse::from(&self.request)
    }

    pub fn deny(&self, status: Status) -> AdmissionResponse {
        let mut response = self.allow();
        response.allowed = false;
        response.result = status;
        response
    }

    /// Denies a review whose objects cannot be read (HTTP 400 semantics), saying why.
    pub fn reject(&self, why: String) -> AdmissionResponse {
        self.deny(bad_request(why))
    }

    /// The objects under review, read into clusters; or why they cannot be.
    pub fn objects(&self) -> Result<Objects<'_>, String> {
        let Some(raw) = &self.object else {
            let operation = operation_name(&self.request.operation);
            return Err(format!("request.object: missing on {operation}"));
        };
        let read = manifest::read(raw.clone()).map_err(|e| format!("request.object: {e}"))?;
        // Only UPDATE has a stored object, and there it is required: derived defaults and
        // transition rules compare with it. A stored object that cannot be read (written
        // while the webhook was bypassed) is left out: the UPDATE is checked as a CREATE,
        // so that the edit that fixes it can be made.
        let old = match (&self.request.operation, &self.old_object) {
            (Operation::Update, Some(old)) => match manifest::from_value(old.clone()) {
                Ok(old) => Some(old),
                Err(e) => {
                    tracing::info!(
                        uid = %self.request.uid,
                        "request.oldObject cannot be read ({e}); checking the update as a creation"
                    );
                    None
                }
            },
            (Operation::Update, None) => return Err("request.oldObject: missing on UPDATE".into()),
            _ => None,
        };
        Ok(Objects { raw, read, old })
    }
}

/// What a CREATE or UPDATE review is about.
pub struct Objects<'a> {
    /// The submitted object exactly as received.
    pub raw: &'a Value,
    /// The submitted object as read (`read.cluster`), its structural errors, and the fields
    /// left out to read it.
    pub read: manifest::Lenient,
    /// The stored object, on UPDATE (when it can be read).
    pub old: Option<PostgresCluster>,
}

fn operation_name(operation: &Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

fn bad_request(message: String) -> Status {
    Status::failure(&message, "BadRequest").with_code(400)
}

/// A denial for a review whose own fields are broken, built without an `AdmissionRequest`.
fn deny_unreadable(uid: String, message: String) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid(&message);
    response.uid = uid;
    response.result = bad_request(message);
    response
}
