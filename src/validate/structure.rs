//! Structural checks of a submitted object against the CRD's own schema, before it is read
//! into Rust types: a wrong type, a value outside an enum, a missing required field or a
//! field the schema does not declare is a field error in Kubernetes' words, and every one
//! is reported, not the first the deserializer meets.
//!
//! Each offending node is removed (a whole list when one of its items is wrong, so that list
//! indexes in later messages still point at what the user wrote); a required field that is
//! missing or removed gets a placeholder the schema allows (empty, zero, the first enum
//! value), so the rest is read and validated as usual. Errors of that validation at or
//! around a removed node or a placeholder are dropped: they would only repeat the problem.

use std::sync::LazyLock;

use kube::CustomResourceExt;
use serde_json::{Map, Value};

use super::field::{Errors, FieldError, Path};
use crate::api::PostgresCluster;

/// The `spec` schema of the CRD this build serves.
static SPEC_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let crd = serde_json::to_value(PostgresCluster::crd()).unwrap_or_default();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
});

/// Passes of reading after the schema check: each removes one node the deserializer still
/// refused (an integer out of range, a malformed value the schema cannot describe).
const MAX_READ_PASSES: usize = 32;

/// A cluster read leniently: what could be read, the structural errors, and the paths of
/// the nodes removed to read it.
pub struct Lenient {
    pub cluster: PostgresCluster,
    pub errors: Vec<FieldError>,
    pub removed: Vec<String>,
}

impl Lenient {
    /// The structural errors followed by `semantic` ones, less those about removed nodes.
    pub fn merge(&self, semantic: Vec<FieldError>) -> Vec<FieldError> {
        let related = |p: &str| self.removed.iter().any(|r| nested(p, r) || nested(r, p));
        let mut out = self.errors.clone();
        out.extend(semantic.into_iter().filter(|e| !related(&e.path)));
        out
    }
}

/// True when `path` is `under` or a field or item below it.
fn nested(path: &str, under: &str) -> bool {
    path.strip_prefix(under)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Reads `value` (already known to be a `pgpilot.io/v1` PostgresCluster object) leniently.
/// `Err` only when nothing of it can be read even after removing the offending nodes.
pub fn read(mut value: Value) -> Result<Lenient, String> {
    let mut e = Errors::default();
    let mut removed = Vec::new();
    // No metadata: read as empty, so validation names what is missing (`metadata.name`).
    if let Value::Object(map) = &mut value {
        map.entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
    }
    match value.get_mut("spec") {
        Some(spec) => {
            if check(spec, &SPEC_SCHEMA, &Path::new("spec"), &mut e, &mut removed) {
                value["spec"] = placeholder(&SPEC_SCHEMA);
                removed.push("spec".to_owned());
            }
        }
        None => {
            e.required(&Path::new("spec"), "");
            value["spec"] = placeholder(&SPEC_SCHEMA);
            removed.push("spec".to_owned());
        }
    }
    for _ in 0..MAX_READ_PASSES {
        match serde_path_to_error::deserialize::<_, PostgresCluster>(value.clone()) {
            Ok(cluster) => {
                return Ok(Lenient {
                    cluster,
                    errors: e.errors,
                    removed,
                });
            }
            Err(err) => {
                let (path, pointer) = outside_lists(&value, locate(err.path()));
                // Only nodes under `spec` are removed; anything else is not ours to fix.
                if !path.as_str().starts_with("spec") || pointer.is_empty() {
                    return Err(describe(err));
                }
                let detail = err.inner().to_string();
                let shown = value
                    .pointer(&pointer)
                    .map(kubernetes_value)
                    .unwrap_or_else(|| "null".into());
                e.invalid(&path, shown, detail);
                // The same node again (its placeholder refused too): give up on its parent.
                if removed.last().map(String::as_str) == Some(path.as_str()) {
                    return Err(describe(err));
                }
                match pointer.strip_prefix("/spec").map(schema_at) {
                    // Untyped (a parameter value): removing it leaves a readable map.
                    Some(Some(schema)) if schema.get("type").is_some() => {
                        if let Some(node) = value.pointer_mut(&pointer) {
                            *node = placeholder(schema);
                        }
                    }
                    _ => remove(&mut value, &pointer),
                }
                removed.push(path.as_str().to_owned());
            }
        }
    }
    Err("too many unreadable fields".into())
}

/// The deserializer's error with its field path (`spec.instances: invalid type: ...`):
/// the wording of both readers, strict and lenient.
pub(crate) fn describe(err: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    let inner = err.into_inner().to_string();
    if path == "." {
        inner
    } else {
        format!("{path}: {inner}")
    }
}

/// Our field path and the JSON pointer of a deserializer's error location.
fn locate(path: &serde_path_to_error::Path) -> (Path, String) {
    use serde_path_to_error::Segment;
    let mut ours: Option<Path> = None;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                ours = Some(match ours {
                    None => Path::new(key),
                    Some(p) => p.child(key),
                });
            }
            Segment::Seq { index } => {
                pointer.push_str(&format!("/{index}"));
                ours = ours.map(|p| p.index(*index));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    (ours.unwrap_or_else(|| Path::new("")), pointer)
}

/// The location of the list holding a node, for a node inside lists: removing one item would
/// shift the indexes later messages name.
fn outside_lists(value: &Value, (path, pointer): (Path, String)) -> (Path, String) {
    let (mut path, mut pointer) = (path.as_str().to_owned(), pointer);
    while let Some((parent, _)) = pointer.rsplit_once('/') {
        if !matches!(value.pointer(parent), Some(Value::Array(_))) {
            break;
        }
        pointer = parent.to_owned();
        if let Some(open) = path.rfind('[') {
            path.truncate(open);
        }
    }
    (Path::new(&path), pointer)
}

/// The schema of the node at `pointer` below `spec`.
fn schema_at(pointer: &str) -> Option<&'static Value> {
    let mut schema: &Value = &SPEC_SCHEMA;
    for token in pointer.split('/').skip(1) {
        let key = token.replace("~1", "/").replace("~0", "~");
        schema = match schema["type"].as_str() {
            Some("array") => &schema["items"],
            _ => match schema["properties"].get(&key) {
                Some(s) => s,
                None => schema
                    .get("additionalProperties")
                    .filter(|s| s.is_object())?,
            },
        };
    }
    Some(schema)
}

/// The smallest value `schema` allows, standing in for a missing or removed required field.
fn placeholder(schema: &Value) -> Value {
    if schema["x-kubernetes-int-or-string"] == true {
        return Value::from(0);
    }
    if let Some(first) = schema["enum"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v.is_string()))
    {
        return first.clone();
    }
    match schema["type"].as_str() {
        Some("string") => Value::from(""),
        Some("integer") | Some("number") => Value::from(0),
        Some("boolean") => Value::from(false),
        Some("array") => Value::Array(Vec::new()),
        Some("object") => {
            let mut map = Map::new();
            for name in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = name.as_str() {
                    map.insert(name.to_owned(), placeholder(&schema["properties"][name]));
                }
            }
            Value::Object(map)
        }
        _ => Value::Null,
    }
}

fn remove(value: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    if let Some(Value::Object(map)) = value.pointer_mut(parent) {
        map.remove(&last);
    }
}

/// Checks `value` against `schema`, recording errors and removing offending children;
/// true when `value` itself must go.
fn check(
    value: &mut Value,
    schema: &Value,
    path: &Path,
    e: &mut Errors,
    removed: &mut Vec<String>,
) -> bool {
    if value.is_null() {
        if schema["nullable"] == true || schema.get("type").is_none() {
            return false;
        }
        return wrong_type(value, schema["type"].as_str().unwrap_or("object"), path, e);
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return match value {
            Value::String(_) => false,
            Value::Number(n) if n.is_i64() || n.is_u64() => false,
            _ => wrong_type(value, "integer or string", path, e),
        };
    }
    let Some(expected) = schema["type"].as_str() else {
        // `x-kubernetes-preserve-unknown-fields` with no type: anything goes.
        return false;
    };
    let fits = match (expected, &*value) {
        ("string", Value::String(_)) | ("boolean", Value::Bool(_)) => true,
        ("number", Value::Number(_)) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64(),
        ("array", Value::Array(_)) | ("object", Value::Object(_)) => true,
        _ => false,
    };
    if !fits {
        return wrong_type(value, schema["type"].as_str().unwrap_or("object"), path, e);
    }
    if let (Some(allowed), Value::String(s)) = (schema["enum"].as_array(), &*value) {
        let supported: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        if !supported.contains(&s.as_str()) {
            e.not_supported(path, s, &supported);
            return true;
        }
    }
    match value {
        Value::Object(map) => check_object(map, schema, path, e, removed),
        Value::Array(items) => {
            let mut broken = false;
            for (i, item) in items.iter_mut().enumerate() {
                broken |= check(item, &schema["items"], &path.index(i), e, removed);
            }
            broken
        }
        _ => false,
    }
}

fn check_object(
    map: &mut Map<String, Value>,
    schema: &Value,
    path: &Path,
    e: &mut Errors,
    removed: &mut Vec<String>,
) -> bool {
    let properties = schema["properties"].as_object();
    let additional = schema.get("additionalProperties");
    let mut gone = Vec::new();
    for (key, child) in map.iter_mut() {
        let (child_path, child_schema) = match (properties.and_then(|p| p.get(key)), additional) {
            (Some(s), _) => (path.child(key), s),
            (None, Some(s)) if s.is_object() => (path.key(key), s),
            _ if schema["x-kubernetes-preserve-unknown-fields"] == true => continue,
            _ => {
                e.forbidden(&path.child(key), "field not declared in schema");
                gone.push((key.clone(), path.child(key)));
                continue;
            }
        };
        if check(child, child_schema, &child_path, e, removed) {
            gone.push((key.clone(), child_path));
        }
    }
    for (key, child_path) in &gone {
        map.remove(key);
        removed.push(child_path.as_str().to_owned());
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let Some(name) = required.as_str() else {
            continue;
        };
        if map.contains_key(name) {
            continue;
        }
        // A field removed above has its error already; a missing one is reported here.
        if !gone.iter().any(|(key, _)| key == name) {
            e.required(&path.child(name), "");
            removed.push(path.child(name).as_str().to_owned());
        }
        let child_schema = &schema["properties"][name];
        map.insert(name.to_owned(), placeholder(child_schema));
    }
    false
}

/// Records that `value` is not of the `expected` type; true: the node goes.
fn wrong_type(value: &Value, expected: &str, path: &Path, e: &mut Errors) -> bool {
    let actual = type_name(value);
    let detail = format!(
        "{} in body must be of type {expected}: {actual:?}",
        path.as_str()
    );
    e.invalid(path, format!("{actual:?}"), detail);
    true
}

/// The OpenAPI name of a JSON value's type, as Kubernetes reports it.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as a field error shows it: strings quoted, others as JSON (truncated).
fn kubernetes_value(value: &Value) -> String {
    match value {
        Value::String(s) => super::field::quote(s),
        other => {
            let text = other.to_string();
            if text.len() <= 128 {
                return text;
            }
            let mut end = 128;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}...", &text[..end])
        }
    }
}
