//! Patroni's dynamic configuration (the `config` Patroni keeps in the DCS): the difference
//! between what a member reports (`GET /config`) and what `render` wants, as the JSON merge
//! patch `PATCH /config` takes. Pure.
//!
//! pgpilot owns the keys it renders: the timings, the replication mode, and under
//! `postgresql` the rewind and slot switches, `pg_hba` (replaced whole) and `parameters`
//! (owned whole: a parameter no longer in the spec is sent as `null`, which removes it).
//! Keys Patroni keeps for itself (`slots`, `permanent_slots`, ...) are never sent.

use serde_json::{Map, Value};

/// The merge patch that turns `current` into `desired` for the keys pgpilot owns; `None`
/// when nothing differs, so that a converged cluster gets no write.
pub fn diff(current: &Value, desired: &Value) -> Option<Value> {
    diff_at(None, current, desired)
}

/// The patch for the object `desired`, found under key `parent` (`None`: the top).
fn diff_at(parent: Option<&str>, current: &Value, desired: &Value) -> Option<Value> {
    let mut patch = Map::new();
    for (key, want) in desired.as_object().into_iter().flatten() {
        let have = current.get(key).unwrap_or(&Value::Null);
        let change = match (parent, key.as_str()) {
            (None, "postgresql") => diff_at(Some("postgresql"), have, want),
            (Some("postgresql"), "parameters") => parameters(have, want),
            _ => (!same_json(have, want)).then(|| want.clone()),
        };
        if let Some(change) = change {
            patch.insert(key.clone(), change);
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

fn parameters(current: &Value, desired: &Value) -> Option<Value> {
    let mut patch = Map::new();
    let empty = Map::new();
    let current = current.as_object().unwrap_or(&empty);
    let desired = desired.as_object().unwrap_or(&empty);
    for (name, want) in desired {
        if !current
            .get(name)
            .is_some_and(|have| same_setting(have, want))
        {
            patch.insert(name.clone(), want.clone());
        }
    }
    for name in current.keys() {
        if !desired.contains_key(name) {
            patch.insert(name.clone(), Value::Null);
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

/// JSON equality, with numbers compared by value (`30` and `30.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Two values of a PostgreSQL setting mean the same. The DCS may hold what a YAML 1.1
/// reader made of the bootstrap file (`on` → `true`, `100` → `100`), pgpilot sends text.
fn same_setting(a: &Value, b: &Value) -> bool {
    if same_json(a, b) {
        return true;
    }
    match (boolean(a), boolean(b)) {
        (Some(x), Some(y)) => return x == y,
        (Some(_), None) | (None, Some(_)) => return false,
        (None, None) => {}
    }
    match (text(a), text(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A boolean setting's value: a JSON boolean or one of PostgreSQL's words for one (digits
/// are left alone: `1` is far more often a number).
fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "yes" => Some(true),
            "off" | "false" | "no" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn desired() -> Value {
        json!({
            "ttl": 30, "loop_wait": 10, "synchronous_mode": false,
            "postgresql": {
                "use_slots": true,
                "pg_hba": ["local all all trust", "host all all all scram-sha-256"],
                "parameters": { "work_mem": "4MB", "hot_standby": "on", "max_connections": "100" }
            }
        })
    }

    #[test]
    fn nothing_differs_nothing_is_sent() {
        // What Patroni holds after bootstrapping from YAML: booleans and numbers typed,
        // plus keys of its own.
        let current = json!({
            "ttl": 30.0, "loop_wait": 10, "synchronous_mode": false, "slots": {"x": {}},
            "postgresql": {
                "use_slots": true,
                "pg_hba": ["local all all trust", "host all all all scram-sha-256"],
                "parameters": { "work_mem": "4MB", "hot_standby": true, "max_connections": 100 }
            }
        });
        assert_eq!(diff(&current, &desired()), None);
    }

    #[test]
    fn changes_and_removals_are_a_merge_patch() {
        let current = json!({
            "ttl": 30, "loop_wait": 10, "synchronous_mode": true,
            "postgresql": {
                "use_slots": true,
                "pg_hba": ["local all all trust"],
                "parameters": { "work_mem": "8MB", "hot_standby": "on", "max_connections": "100", "old": "1" }
            }
        });
        assert_eq!(
            diff(&current, &desired()),
            Some(json!({
                "synchronous_mode": false,
                "postgresql": {
                    "pg_hba": ["local all all trust", "host all all all scram-sha-256"],
                    "parameters": { "work_mem": "4MB", "old": null }
                }
            }))
        );
    }

    #[test]
    fn an_empty_or_missing_configuration_gets_everything() {
        assert_eq!(diff(&json!({}), &desired()), Some(desired()));
        assert_eq!(diff(&Value::Null, &desired()), Some(desired()));
    }

    #[test]
    fn booleans_compare_by_meaning_only() {
        assert!(same_setting(&json!(true), &json!("on")));
        assert!(same_setting(&json!("OFF"), &json!(false)));
        assert!(!same_setting(&json!("on"), &json!("off")));
        assert!(!same_setting(&json!(true), &json!("1MB")));
        assert!(same_setting(&json!(100), &json!("100")));
        assert!(!same_setting(&json!("1"), &json!("on")));
    }
}
