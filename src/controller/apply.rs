//! Applying rendered children: server-side apply with field manager `pgpilot`, but only when
//! the live object differs from what was rendered, so a resync of an unchanged cluster
//! writes nothing; and pruning children the spec no longer wants.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Error;

pub const FIELD_MANAGER: &str = "pgpilot";

/// What happened to one child, for events and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(String),
    Updated(String),
    Deleted(String),
}

/// True when every field of `desired` is present in `live` with the same value: objects by
/// key, lists element by element. Fields the API server adds (defaults, status, managed
/// fields) are ignored, so this is the question SSA would answer, without a write.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(lv, dv),
            None => {
                dv.is_null()
                    || dv.as_object().is_some_and(|o| o.is_empty())
                    || dv.as_array().is_some_and(|a| a.is_empty())
            }
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        // The API server may normalise a number written as a string or the other way round
        // (int-or-string fields); compare their text.
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n)) => {
            n.to_string() == *s
        }
        (l, d) => l == d,
    }
}

/// The parts of an object pgpilot owns: labels, annotations, owner references and
/// everything outside `metadata` and `status`.
fn owned_fields(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get("metadata").cloned() {
            let keep = ["labels", "annotations", "ownerReferences"];
            let trimmed: serde_json::Map<String, Value> = meta
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| keep.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            map.insert("metadata".into(), Value::Object(trimmed));
        }
    }
    v
}

/// Applies each desired object that differs from its live twin; returns what changed.
pub async fn apply_all<K>(api: &Api<K>, desired: &[K], live: &[K]) -> Result<Vec<Change>, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let mut changes = Vec::new();
    for obj in desired {
        let name = obj.name_any();
        let want =
            serde_json::to_value(obj).map_err(|e| Error::Serialize(name.clone(), e.to_string()))?;
        let current = live.iter().find(|l| l.name_any() == name);
        if let Some(current) = current {
            let have = serde_json::to_value(current)
                .map_err(|e| Error::Serialize(name.clone(), e.to_string()))?;
            if contains(&have, &owned_fields(&want)) {
                continue;
            }
        }
        let kind = K::kind(&K::DynamicType::default()).to_string();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&want),
        )
        .await
        .map_err(|e| Error::Apply(format!("{kind}/{name}"), e))?;
        let label = format!("{kind}/{name}");
        changes.push(if current.is_some() {
            Change::Updated(label)
        } else {
            Change::Created(label)
        });
    }
    Ok(changes)
}

/// Lists a cluster's children of one kind.
pub async fn list<K>(api: &Api<K>, selector: &str) -> Result<Vec<K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    Ok(api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::List(kind, e))?
        .items)
}

/// Deletes live children that were not rendered and that this cluster controls (by owner
/// UID, so a same-named object of someone else is never touched). Dependents (a Job's
/// pods) go with them; PersistentVolumeClaims are never among the kinds pruned.
pub async fn prune<K>(
    api: &Api<K>,
    desired: &[K],
    live: &[K],
    owner_uid: &str,
) -> Result<Vec<Change>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut changes = Vec::new();
    for obj in live {
        let name = obj.name_any();
        let controlled = obj
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.uid == owner_uid);
        if !controlled
            || desired.iter().any(|d| d.name_any() == name)
            || obj.meta().deletion_timestamp.is_some()
        {
            continue;
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => changes.push(Change::Deleted(format!("{kind}/{name}"))),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Delete(format!("{kind}/{name}"), e)),
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn subset_semantics() {
        let live = json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a", "imagePullPolicy": "IfNotPresent"}]}}}, "status": {}});
        assert!(contains(
            &live,
            &json!({"spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "a"}]}}}})
        ));
        assert!(!contains(&live, &json!({"spec": {"replicas": 3}})));
        assert!(!contains(
            &live,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}})
        ));
        assert!(contains(&json!({"port": 5432}), &json!({"port": "5432"})));
        assert!(contains(&json!({}), &json!({"annotations": {}, "x": null})));
        assert!(!contains(&json!({}), &json!({"labels": {"a": "b"}})));
    }
}
