//! Growing volumes. A StatefulSet's claim templates are immutable, so a larger
//! `storage.size` is applied to each existing claim instead (the storage class must allow
//! expansion). Claims are only ever grown, never shrunk or deleted.

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::Error;
use super::apply::{Change, FIELD_MANAGER};
use crate::quantity;

fn requested(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// Raises the storage request of every claim made from a template of `sets` whose request
/// is below the template's. A claim that cannot grow (its storage class does not allow
/// expansion, or it is not bound yet) is reported in the second value, after the others
/// have been tried.
pub async fn grow(
    client: &Client,
    ns: &str,
    sets: &[StatefulSet],
) -> Result<(Vec<Change>, Option<Error>), Error> {
    let mut refused = None;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let mut changes = Vec::new();
    for sts in sets {
        let Some(spec) = &sts.spec else { continue };
        let sts_name = sts.name_any();
        for template in spec.volume_claim_templates.iter().flatten() {
            let (Some(template_name), Some(want)) =
                (template.metadata.name.as_deref(), requested(template))
            else {
                continue;
            };
            let selector = template
                .metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let prefix = format!("{template_name}-{sts_name}-");
            let claims = api
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| Error::List("PersistentVolumeClaim".into(), e))?;
            for claim in claims
                .items
                .iter()
                .filter(|c| c.name_any().starts_with(&prefix))
            {
                let Some(have) = requested(claim) else {
                    continue;
                };
                if quantity::compare(&have, &want) != Some(Ordering::Less) {
                    continue;
                }
                let name = claim.name_any();
                let patch = serde_json::json!({ "spec": { "resources": { "requests": { "storage": want } } } });
                // A merge patch, not an apply: the claim belongs to the StatefulSet controller.
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                    Ok(_) => changes.push(Change::Updated(format!(
                        "PersistentVolumeClaim/{name} to {want}"
                    ))),
                    Err(e) => {
                        refused.get_or_insert(Error::Apply(
                            format!("PersistentVolumeClaim/{name} (growing to {want})"),
                            e,
                        ));
                    }
                }
            }
        }
    }
    Ok((changes, refused))
}
