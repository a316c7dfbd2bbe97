//! Field errors in Kubernetes' form: `spec.instances: Invalid value: 0: must be between 1 and 16`.

use std::fmt;

/// What is wrong with a field. The variants and their wording follow
/// `k8s.io/apimachinery/pkg/util/validation/field`, so kubectl users read familiar messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Required(String),
    /// The offending value, already rendered (strings quoted), and why it is wrong.
    Invalid {
        value: String,
        detail: String,
    },
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
    Forbidden(String),
    Duplicate(String),
    NotFound(String),
    TooMany {
        actual: usize,
        max: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub kind: ErrorKind,
}

impl FieldError {
    /// The `reason` of a `details.causes` entry in a Kubernetes Status.
    pub fn reason(&self) -> &'static str {
        match self.kind {
            ErrorKind::Required(_) => "FieldValueRequired",
            ErrorKind::Invalid { .. } => "FieldValueInvalid",
            ErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            ErrorKind::Forbidden(_) => "FieldValueForbidden",
            ErrorKind::Duplicate(_) => "FieldValueDuplicate",
            ErrorKind::NotFound(_) => "FieldValueNotFound",
            ErrorKind::TooMany { .. } => "FieldValueTooMany",
        }
    }

    /// The message without the path, as in a `details.causes` entry.
    pub fn message(&self) -> String {
        match &self.kind {
            ErrorKind::Required(d) if d.is_empty() => "Required value".into(),
            ErrorKind::Required(d) => format!("Required value: {d}"),
            ErrorKind::Invalid { value, detail } => format!("Invalid value: {value}: {detail}"),
            ErrorKind::NotSupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                )
            }
            ErrorKind::Forbidden(d) => format!("Forbidden: {d}"),
            ErrorKind::Duplicate(v) => format!("Duplicate value: {v}"),
            ErrorKind::NotFound(v) => format!("Not found: {v}"),
            ErrorKind::TooMany { actual, max } => {
                format!("Too many: {actual}: must have at most {max} items")
            }
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message())
    }
}

/// A string value as Kubernetes prints it (Go's `%q`), truncated so a hostile megabyte of
/// input does not become a megabyte of error message.
pub fn quote(s: &str) -> String {
    const MAX: usize = 128;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

/// A field path under construction: `spec.users[2].name`, `spec.postgresql.parameters[port]`.
#[derive(Clone, Debug)]
pub struct Path(String);

impl Path {
    pub fn new(root: &str) -> Path {
        Path(root.to_owned())
    }
    pub fn child(&self, name: &str) -> Path {
        Path(format!("{}.{name}", self.0))
    }
    pub fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }
    pub fn key(&self, k: &str) -> Path {
        Path(format!("{}[{}]", self.0, truncate(k)))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Collects errors and warnings; rules push into it and never stop at the first problem.
#[derive(Debug, Default)]
pub struct Errors {
    pub errors: Vec<FieldError>,
    pub warnings: Vec<String>,
}

impl Errors {
    fn push(&mut self, path: &Path, kind: ErrorKind) {
        self.errors.push(FieldError {
            path: path.0.clone(),
            kind,
        });
    }
    pub fn required(&mut self, path: &Path, detail: &str) {
        self.push(path, ErrorKind::Required(detail.into()));
    }
    pub fn invalid(&mut self, path: &Path, value: impl Into<String>, detail: impl Into<String>) {
        let kind = ErrorKind::Invalid {
            value: value.into(),
            detail: detail.into(),
        };
        self.push(path, kind);
    }
    pub fn invalid_str(&mut self, path: &Path, value: &str, detail: impl Into<String>) {
        self.invalid(path, quote(value), detail);
    }
    pub fn not_supported(&mut self, path: &Path, value: &str, supported: &[&str]) {
        let supported = supported.iter().map(|s| s.to_string()).collect();
        self.push(
            path,
            ErrorKind::NotSupported {
                value: quote(value),
                supported,
            },
        );
    }
    pub fn forbidden(&mut self, path: &Path, detail: impl Into<String>) {
        self.push(path, ErrorKind::Forbidden(detail.into()));
    }
    pub fn duplicate(&mut self, path: &Path, value: &str) {
        self.push(path, ErrorKind::Duplicate(quote(value)));
    }
    pub fn not_found(&mut self, path: &Path, value: &str) {
        self.push(path, ErrorKind::NotFound(quote(value)));
    }
    pub fn too_many(&mut self, path: &Path, actual: usize, max: usize) {
        self.push(path, ErrorKind::TooMany { actual, max });
    }
    pub fn warn(&mut self, path: &Path, message: impl AsRef<str>) {
        self.warnings
            .push(format!("{}: {}", path.0, message.as_ref()));
    }

    /// Checks that `value` lies in `min..=max`.
    pub fn range<T: PartialOrd + fmt::Display>(&mut self, path: &Path, value: T, min: T, max: T) {
        if value < min || value > max {
            self.invalid(
                path,
                value.to_string(),
                format!("must be between {min} and {max}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_wording() {
        let mut e = Errors::default();
        let spec = Path::new("spec");
        e.range(&spec.child("instances"), 0, 1, 16);
        e.not_supported(
            &spec.child("pooler").child("mode"),
            "fast",
            &["session", "transaction"],
        );
        e.required(&spec.child("storage").child("size"), "");
        e.duplicate(&spec.child("users").index(1).child("name"), "app");
        let text: Vec<String> = e.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "spec.instances: Invalid value: 0: must be between 1 and 16",
                "spec.pooler.mode: Unsupported value: \"fast\": supported values: \"session\", \"transaction\"",
                "spec.storage.size: Required value",
                "spec.users[1].name: Duplicate value: \"app\"",
            ]
        );
    }

    #[test]
    fn long_values_are_truncated() {
        let q = quote(&"é".repeat(1000));
        assert!(q.len() < 300 && q.ends_with("..."));
    }
}
