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

/// What happened to one child, for the log and the reconcile's Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created(String),
    Updated(String),
    Deleted(String),
}

impl Change {
    fn verb(&self) -> &'static str {
        match self {
            Change::Created(_) => "Created",
            Change::Updated(_) => "Updated",
            Change::Deleted(_) => "Deleted",
        }
    }

    fn what(&self) -> &str {
        match self {
            Change::Created(w) | Change::Updated(w) | Change::Deleted(w) => w,
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb(), self.what())
    }
}

/// One Event for a pass that changed children: reason `Created`, `Updated` or `Deleted`
/// when all changes are of one kind, else `Applied`; the note lists them by kind. `None`
/// when nothing changed.
pub fn summary(changes: &[Change]) -> Option<(&'static str, String)> {
    let first = changes.first()?;
    let reason = if changes.iter().all(|c| c.verb() == first.verb()) {
        first.verb()
    } else {
        "Applied"
    };
    let by_verb = |verb: &str| -> Vec<&str> {
        changes
            .iter()
            .filter(|c| c.verb() == verb)
            .map(Change::what)
            .collect()
    };
    let verbs = ["Created", "Updated", "Deleted"];
    let named: Vec<String> = verbs
        .iter()
        .map(|v| (v, by_verb(v)))
        .filter(|(_, of)| !of.is_empty())
        .map(|(v, of)| format!("{v} {}: {}", of.len(), of.join(", ")))
        .collect();
    let note = named.join("; ");
    if note.len() <= SUMMARY_MAX {
        return Some((reason, note));
    }
    // Too many names for an Event (a new cluster has a few dozen children): kinds only.
    let counted: Vec<String> = verbs
        .iter()
        .map(|v| (v, by_verb(v)))
        .filter(|(_, of)| !of.is_empty())
        .map(|(v, of)| {
            let mut kinds: Vec<(&str, usize)> = Vec::new();
            for what in &of {
                let kind = what.split('/').next().unwrap_or_default();
                match kinds.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => kinds.push((kind, 1)),
                }
            }
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            format!("{v} {}: {}", of.len(), kinds.join(", "))
        })
        .collect();
    Some((reason, counted.join("; ")))
}

/// The longest summary that names each child; beyond, it counts them by kind.
const SUMMARY_MAX: usize = 900;

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

/// True when the cluster with `owner_uid` is `obj`'s controller.
pub fn controlled_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.uid == owner_uid)
}

/// The child named `name` as it lives, when it is this cluster's: from `live` (the list by
/// the cluster's labels), and otherwise looked up by name, since an object of that name that
/// pgpilot did not create for this cluster must never be taken over (a forced apply would
/// capture it, and the garbage collector delete it with the cluster).
pub async fn own<'a, K>(
    api: &Api<K>,
    live: &'a [K],
    name: &str,
    owner_uid: &str,
) -> Result<Option<&'a K>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    match live.iter().find(|l| l.name_any() == name) {
        Some(current) if controlled_by(current, owner_uid) => Ok(Some(current)),
        Some(_) => Err(Error::Conflict(format!("{kind}/{name}"))),
        None => match api.get_opt(name).await {
            Ok(None) => Ok(None),
            Ok(Some(_)) => Err(Error::Conflict(format!("{kind}/{name}"))),
            Err(e) => Err(Error::List(format!("{kind}/{name}"), e)),
        },
    }
}

/// Applies each desired object that differs from its live twin; returns what changed.
/// A same-named object this cluster does not control stops the step with
/// [`Error::Conflict`], unchanged.
pub async fn apply_all<K>(
    api: &Api<K>,
    desired: &[K],
    live: &[K],
    owner_uid: &str,
) -> Result<Vec<Change>, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let mut changes = Vec::new();
    for obj in desired {
        let name = obj.name_any();
        let want =
            serde_json::to_value(obj).map_err(|e| Error::Serialize(name.clone(), e.to_string()))?;
        let current = own(api, live, &name, owner_uid).await?;
        let have = current
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| Error::Serialize(name.clone(), e.to_string()))?;
        let compare = owned_fields(&want);
        changes.extend(apply_one(api, &kind, &name, &want, &compare, have.as_ref()).await?);
    }
    Ok(changes)
}

/// The one write path for children: server-side applies `want` with field manager
/// `pgpilot` unless the live object `have` already holds everything in `compare`; says
/// what changed.
pub async fn apply_one<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    want: &Value,
    compare: &Value,
    have: Option<&Value>,
) -> Result<Option<Change>, Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    if have.is_some_and(|have| contains(have, compare)) {
        return Ok(None);
    }
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(want),
    )
    .await
    .map_err(|e| Error::Apply(format!("{kind}/{name}"), e))?;
    let label = format!("{kind}/{name}");
    Ok(Some(if have.is_some() {
        Change::Updated(label)
    } else {
        Change::Created(label)
    }))
}

/// Creates an object made once and never re-applied (a request's Job, a restore's claim);
/// one that exists already (made by a pass whose status write was lost) is left as it is.
/// True when this call created it.
pub async fn create_once<K>(api: &Api<K>, object: &K) -> Result<bool, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    match api.create(&kube::api::PostParams::default(), object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => {
            let kind = K::kind(&K::DynamicType::default()).to_string();
            Err(Error::Apply(format!("{kind}/{}", object.name_any()), e))
        }
    }
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
        if !controlled_by(obj, owner_uid)
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
    use super::{Change, contains, summary};

    #[test]
    fn one_event_says_what_a_pass_changed() {
        assert_eq!(summary(&[]), None);
        let created = [
            Change::Created("ServiceAccount/pg-patroni".into()),
            Change::Created("StatefulSet/pg".into()),
        ];
        assert_eq!(
            summary(&created),
            Some((
                "Created",
                "Created 2: ServiceAccount/pg-patroni, StatefulSet/pg".into()
            ))
        );
        let mixed = [
            Change::Updated("ConfigMap/pg-patroni".into()),
            Change::Deleted("CronJob/pg-backup-repo1-incr".into()),
        ];
        assert_eq!(
            summary(&mixed),
            Some((
                "Applied",
                "Updated 1: ConfigMap/pg-patroni; Deleted 1: CronJob/pg-backup-repo1-incr".into()
            ))
        );
        assert_eq!(mixed[1].to_string(), "Deleted CronJob/pg-backup-repo1-incr");
        let many: Vec<Change> = (0..40)
            .map(|i| Change::Created(format!("ConfigMap/a-rather-long-child-name-{i}")))
            .chain([Change::Created("StatefulSet/pg".into())])
            .collect();
        assert_eq!(
            summary(&many),
            Some(("Created", "Created 41: 40 ConfigMap, 1 StatefulSet".into()))
        );
    }
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
