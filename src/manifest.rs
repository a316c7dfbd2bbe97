//! Reading `PostgresCluster` objects from untrusted YAML or JSON: one precise, one-line
//! error per problem, never a panic.

use serde::Deserialize;

use crate::api::PostgresCluster;
use crate::validate::structure;
pub use crate::validate::structure::Lenient;

pub const API_VERSION: &str = "pgpilot.io/v1";
pub const KIND: &str = "PostgresCluster";

/// Largest input read: far above any real cluster, well below memory trouble.
pub const MAX_INPUT_BYTES: usize = 8 << 20;

/// Turns a JSON value into a `PostgresCluster`, naming the offending field on failure
/// (`spec.instances: invalid type: string "two", expected i32`).
pub fn from_value(value: serde_json::Value) -> Result<PostgresCluster, String> {
    is_cluster(&value)?;
    serde_path_to_error::deserialize(value).map_err(structure::describe)
}

/// Reads a JSON value as the admission webhook and the CLI do: every structural problem of
/// the spec is a field error in [`Lenient::errors`], and the rest is read. `Err` only for a
/// value that is not a `pgpilot.io/v1` PostgresCluster at all.
pub fn read(value: serde_json::Value) -> Result<Lenient, String> {
    is_cluster(&value)?;
    structure::read(value)
}

fn is_cluster(value: &serde_json::Value) -> Result<(), String> {
    let serde_json::Value::Object(map) = value else {
        return Err(format!("expected an object, found {}", type_name(value)));
    };
    let api_version = map.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
    let kind = map.get("kind").and_then(|v| v.as_str()).unwrap_or("");
    if api_version != API_VERSION || kind != KIND {
        return Err(format!(
            "expected apiVersion {API_VERSION} and kind {KIND}, found apiVersion {api_version:?} and kind {kind:?}"
        ));
    }
    Ok(())
}

fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A document that could not be read, numbered from 1.
#[derive(Debug, PartialEq)]
pub struct DocumentError {
    pub document: usize,
    pub message: String,
}

impl std::fmt::Display for DocumentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.document {
            0 => f.write_str(&self.message),
            n => write!(f, "document {n}: {}", self.message),
        }
    }
}

/// Reads every `PostgresCluster` in a multi-document YAML stream. Empty documents are
/// skipped; any other problem fails the whole stream, so nothing is half processed.
pub fn from_yaml_stream(text: &str) -> Result<Vec<PostgresCluster>, DocumentError> {
    documents(text, from_value)
}

/// [`read`] of every document of a multi-document YAML stream: structural problems are in
/// each document's errors; a document that is not a PostgresCluster (or not YAML) fails the
/// whole stream.
pub fn read_yaml_stream(text: &str) -> Result<Vec<Lenient>, DocumentError> {
    documents(text, read)
}

fn documents<T>(
    text: &str,
    read: impl Fn(serde_json::Value) -> Result<T, String>,
) -> Result<Vec<T>, DocumentError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(DocumentError {
            document: 0,
            message: format!("input is larger than {MAX_INPUT_BYTES} bytes"),
        });
    }
    if let Some(line) = too_deep(text) {
        return Err(DocumentError {
            document: 0,
            message: format!("line {line}: brackets nested deeper than {MAX_FLOW_DEPTH} levels"),
        });
    }
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let fail = |message: String| DocumentError { document, message };
        let value = serde_json::Value::deserialize(doc)
            .map_err(|e| fail(format!("not valid YAML: {e}")))?;
        if value.is_null() {
            continue;
        }
        out.push(read(value).map_err(fail)?);
    }
    Ok(out)
}

/// Flow collections (`[...]`, `{...}`) deeper than this are refused before parsing: the YAML
/// parser reads a whole document before its recursion limit applies, and deep input makes
/// that slow. Real clusters nest a handful of levels; block (indented) nesting is bounded by
/// the input size limit.
const MAX_FLOW_DEPTH: usize = 64;

/// The line on which bracket nesting first exceeds `MAX_FLOW_DEPTH`, if it does. Quotes are
/// not tracked, so brackets inside strings count too; no legitimate value has 64 of them.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    for b in text.bytes() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'\n' => line += 1,
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_the_document() {
        let e = from_yaml_stream("apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata: {name: a}\nspec: {storage: {size: 1Gi}}\n---\napiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata: {name: b}\nspec: {instances: two, storage: {size: 1Gi}}\n").unwrap_err();
        assert_eq!(e.document, 2);
        assert!(
            e.message
                .starts_with("spec.instances: invalid type: string \"two\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn rejects_other_kinds_and_shapes() {
        let e = from_yaml_stream("apiVersion: apps/v1\nkind: Deployment\n").unwrap_err();
        assert!(
            e.message
                .contains("found apiVersion \"apps/v1\" and kind \"Deployment\"")
        );
        assert!(
            from_yaml_stream("- 1\n")
                .unwrap_err()
                .message
                .contains("found a list")
        );
        assert!(
            from_yaml_stream("a: [")
                .unwrap_err()
                .message
                .starts_with("not valid YAML")
        );
        assert!(
            from_yaml_stream("apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nspec: {}\n")
                .unwrap_err()
                .message
                .contains("storage")
        );
        assert!(from_yaml_stream("---\n---\n").unwrap().is_empty());
        let deep = format!("a:\n  b: {}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            from_yaml_stream(&deep).unwrap_err().message,
            "line 2: brackets nested deeper than 64 levels"
        );
    }
}
