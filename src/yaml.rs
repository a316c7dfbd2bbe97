//! YAML output that every reader reads back the same: YAML 1.1 readers (kubectl, most
//! GitOps tools) take a plain `on`, `yes`, `n`, `0755`, `1:30` or `2024-01-01` for a
//! boolean, number or timestamp, where a YAML 1.2 writer leaves it unquoted. Strings are
//! written plain only when they cannot be anything but a string in either version;
//! otherwise double-quoted (JSON's escapes are valid YAML), or as a literal block when they
//! span lines.

use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

/// `value` as a YAML document (block style, two-space indentation).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let value = serde_json::to_value(value)?;
    let mut out = String::new();
    match &value {
        Value::Object(m) if !m.is_empty() => mapping(&value, 0, &mut out),
        Value::Array(a) if !a.is_empty() => sequence(&value, 0, &mut out),
        scalar => {
            out.push_str(&inline(scalar, 0));
            out.push('\n');
        }
    }
    Ok(out)
}

fn mapping(value: &Value, indent: usize, out: &mut String) {
    let Value::Object(map) = value else { return };
    for (key, v) in map {
        let _ = write!(out, "{:indent$}{}:", "", string(key, usize::MAX));
        child(v, indent, out);
    }
}

fn sequence(value: &Value, indent: usize, out: &mut String) {
    let Value::Array(items) = value else { return };
    for v in items {
        let _ = write!(out, "{:indent$}-", "");
        match v {
            // A mapping item starts on the dash's line.
            Value::Object(m) if !m.is_empty() => {
                let mut nested = String::new();
                mapping(v, indent + 2, &mut nested);
                out.push(' ');
                out.push_str(&nested[indent + 2..]);
            }
            _ => child(v, indent, out),
        }
    }
}

/// What follows `key:` or `-`: a nested block on the next lines, or a scalar on this one.
fn child(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            mapping(v, indent + 2, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            sequence(v, indent + 2, out);
        }
        scalar => {
            out.push(' ');
            out.push_str(&inline(scalar, indent + 2));
            out.push('\n');
        }
    }
}

fn inline(v: &Value, indent: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s, indent),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A string scalar: plain when unambiguous, a literal block for text of several lines
/// (indented by `indent`), else double-quoted.
fn string(s: &str, indent: usize) -> String {
    if is_plain_safe(s) {
        return s.to_owned();
    }
    if indent != usize::MAX && is_block_safe(s) {
        let chomp = match s.len() - s.trim_end_matches('\n').len() {
            0 => "-",
            1 => "",
            _ => "+",
        };
        let mut out = format!("|{chomp}");
        for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
            out.push('\n');
            if !line.is_empty() {
                let _ = write!(out, "{:indent$}{line}", "");
            }
        }
        return out;
    }
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Text of several lines a literal block keeps exactly: no control characters but line
/// feeds, no line starting with a space (the block's indentation is taken from the first),
/// no trailing spaces (invisible, and some editors drop them).
fn is_block_safe(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && s.chars().all(|c| c == '\n' || !c.is_control())
        && s.split('\n').all(|l| !l.ends_with([' ', '\t']))
        && !s.contains("\n ")
}

/// A plain scalar that both YAML 1.1 and 1.2 read as this exact string: starts with a
/// letter, `/` or `_` (a quantity such as `500m` may start with a digit), holds only
/// letters, digits and `-_./=+@,:` (no `: `, no final `:`, no indicators), is not a 1.1 boolean or null word, and does not look like a
/// number (`.inf`, `0x1F`, `1_000`, `1:30`) or a timestamp.
fn is_plain_safe(s: &str) -> bool {
    const WORDS: [&str; 22] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
    ];
    const NULLS: [&str; 4] = ["null", "Null", "NULL", "~"];
    let Some(first) = s.chars().next() else {
        return false;
    };
    if first.is_ascii_digit() {
        return is_quantity_like(s);
    }
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+@,:".contains(c))
        // `: ` starts a mapping and a final `:` ends a key; `image:tag` is plain text.
        && !s.contains(": ")
        && !s.ends_with(':')
        && !WORDS.contains(&s)
        && !NULLS.contains(&s)
        && !matches!(s.to_ascii_lowercase().as_str(), ".inf" | ".nan")
}

/// Digits, at most one fraction, then a unit of letters only (`500m`, `1.5Gi`, `768MB`,
/// `10s`): no YAML version reads that as a number (an exponent needs digits after its `e`)
/// or a timestamp.
fn is_quantity_like(s: &str) -> bool {
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let mut parts = number.split('.');
    let whole_ok = parts.next().is_some_and(|p| !p.is_empty());
    let fraction_ok = parts.next().is_none_or(|p| !p.is_empty());
    whole_ok
        && fraction_ok
        && parts.next().is_none()
        && !unit.is_empty()
        && unit.chars().all(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ambiguous_strings_are_quoted_and_read_back_the_same() {
        let tricky = [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "n",
            "Y",
            "N",
            "true",
            "False",
            "null",
            "~",
            "",
            "1",
            "1.5",
            "1e3",
            "0x1F",
            "0o17",
            "0755",
            "1_000",
            "12:30",
            "2024-01-01",
            "2024-01-01T10:00:00Z",
            ".inf",
            "-.inf",
            ".NaN",
            "-",
            " lead",
            "trail ",
            "a: b",
            "a #b",
            "#x",
            "*x",
            "&x",
            "!x",
            "%x",
            "@x",
            "`x",
            "{",
            "[",
            "]",
            ">",
            "|",
            "'",
            "\"",
            "?",
            ":",
            "é",
            "tab\there",
            "x\u{0}y",
            "500m",
            "1Gi",
            "md5",
            "scram-sha-256",
            "1.5.1Gi",
            "1e",
            "1E",
            "a:",
            "a:b",
            "a:1:2",
            "x: ",
            "768MB",
            "10s",
            "1e5",
            "1.e",
            "1.5e",
            "0x1F",
        ];
        for s in tricky {
            let written = string(s, 2);
            let starts_plain = !written.starts_with(['"', '|']);
            assert_eq!(starts_plain, is_plain_safe(s), "{s:?} written as {written}");
            let doc = to_string(&json!({ "k": s })).unwrap();
            let back: serde_json::Value = serde_yaml::from_str(&doc).unwrap();
            assert_eq!(back, json!({ "k": s }), "{doc}");
        }
        for s in [
            "on",
            "yes",
            "n",
            "true",
            "null",
            "1e3",
            "12:30",
            "2024-01-01",
            "0755",
        ] {
            assert!(string(s, 0).starts_with('"'), "{s} must be quoted");
        }
        for s in [
            "md5",
            "ClusterIP",
            "repo1",
            "/var/lib/x",
            "scram-sha-256",
            "500m",
            "ghcr.io/a/b:1.2",
        ] {
            assert_eq!(string(s, 0), s, "{s} needs no quotes");
        }
    }

    #[test]
    fn nested_documents_read_back_the_same() {
        let value = json!({
            "apiVersion": "v1",
            "data": {"patroni.yml": "a: 1\nb:\n  - on\n", "empty": "", "noeol": "x\ny"},
            "list": [{"name": "a", "v": ["on", 1, true, null]}, [], {}, "yes", [["n"]]],
            "n": 1.5,
            "weird key: #": "v",
        });
        let doc = to_string(&value).unwrap();
        let back: serde_json::Value = serde_yaml::from_str(&doc).unwrap();
        assert_eq!(back, value, "{doc}");
    }
}
