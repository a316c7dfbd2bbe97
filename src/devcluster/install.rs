//! What `kubectl apply -k manifests/` would install that a local control plane needs: the
//! CRD and the webhook configurations, the latter derived from `manifests/webhooks.yaml`
//! so the in-cluster manifests stay the one source of truth.

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, Resource};
use serde::Deserialize;

use super::{DevClusterError, Result, kube_error};
use crate::api::{PostgresCluster, PostgresClusterSpec, StorageSpec};

/// The field manager of everything installed here.
const FIELD_MANAGER: &str = "pgpilot-devcluster";
/// cert-manager's CA injector reads this annotation; without cert-manager we set the
/// `caBundle` ourselves.
const INJECT_CA_ANNOTATION: &str = "cert-manager.io/inject-ca-from";

/// Applies `PostgresCluster`'s CRD (server-side) and waits until it is established and
/// served. The API server's own complaint (a rejected schema, a CEL rule that does not
/// compile) is the error.
pub async fn install_crd(client: &Client, timeout: Duration) -> Result<CustomResourceDefinition> {
    let crd = PostgresCluster::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(&name, &apply_params(), &Patch::Apply(&crd))
        .await
        .map_err(kube_error(format!("applying the CRD {name}")))?;

    let deadline = Instant::now() + timeout;
    let group_version = format!(
        "{}/{}",
        PostgresCluster::group(&()),
        PostgresCluster::version(&())
    );
    let plural = PostgresCluster::plural(&()).to_string();
    loop {
        let stored = api
            .get(&name)
            .await
            .map_err(kube_error(format!("reading the CRD {name}")))?;
        let conditions = stored
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        if let Some(bad) = conditions
            .iter()
            .find(|c| c.type_ == "NonStructuralSchema" && c.status == "True")
        {
            return Err(DevClusterError::Manifest(format!(
                "the API server calls the CRD {name} non-structural: {}",
                bad.message.clone().unwrap_or_default()
            )));
        }
        let established = conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        // Established comes a moment before discovery lists the resource (and kubectl
        // finds it by discovery).
        if established {
            let served = client
                .list_api_group_resources(&group_version)
                .await
                .is_ok_and(|list| list.resources.iter().any(|r| r.name == plural));
            if served {
                return Ok(stored);
            }
        }
        if Instant::now() > deadline {
            return Err(DevClusterError::Timeout {
                what: format!("waiting for the CRD {name} to be established and served"),
                after: timeout,
                last: format!("conditions: {conditions:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A webhook configuration of `manifests/webhooks.yaml`, pointed at a host process.
#[derive(Clone, Debug, PartialEq)]
pub enum WebhookConfiguration {
    Mutating(MutatingWebhookConfiguration),
    Validating(ValidatingWebhookConfiguration),
}

impl WebhookConfiguration {
    pub fn name(&self) -> &str {
        let meta = match self {
            WebhookConfiguration::Mutating(m) => &m.metadata,
            WebhookConfiguration::Validating(v) => &v.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }
}

/// The webhook configurations of `manifests` (the text of `manifests/webhooks.yaml`) for a
/// webhook served at `base_url` (`https://127.0.0.1:PORT`): each webhook's
/// `clientConfig.service` becomes `url: BASE_URL/PATH`, `caBundle` is `ca_pem`, and the
/// cert-manager injection annotation is dropped. Everything else is kept as written.
pub fn webhook_configurations(
    manifests: &str,
    base_url: &str,
    ca_pem: &str,
) -> Result<Vec<WebhookConfiguration>> {
    let bad = |what: String| DevClusterError::Manifest(format!("webhooks.yaml: {what}"));
    let mut out = Vec::new();
    for (i, document) in serde_yaml::Deserializer::from_str(manifests).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|e| bad(format!("document {}: {e}", i + 1)))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_owned();
        let parsed = match kind.as_str() {
            "MutatingWebhookConfiguration" => {
                serde_yaml::from_value(value).map(WebhookConfiguration::Mutating)
            }
            "ValidatingWebhookConfiguration" => {
                serde_yaml::from_value(value).map(WebhookConfiguration::Validating)
            }
            _ => continue,
        };
        let mut configuration = parsed.map_err(|e| bad(format!("document {}: {e}", i + 1)))?;
        let (metadata, client_configs): (_, Vec<&mut WebhookClientConfig>) =
            match &mut configuration {
                WebhookConfiguration::Mutating(m) => (
                    &mut m.metadata,
                    m.webhooks
                        .iter_mut()
                        .flatten()
                        .map(|w| &mut w.client_config)
                        .collect(),
                ),
                WebhookConfiguration::Validating(v) => (
                    &mut v.metadata,
                    v.webhooks
                        .iter_mut()
                        .flatten()
                        .map(|w| &mut w.client_config)
                        .collect(),
                ),
            };
        if let Some(annotations) = &mut metadata.annotations {
            annotations.remove(INJECT_CA_ANNOTATION);
            if annotations.is_empty() {
                metadata.annotations = None;
            }
        }
        let name = metadata.name.clone().unwrap_or_default();
        if client_configs.is_empty() {
            return Err(bad(format!("{kind} {name} has no webhooks")));
        }
        for client_config in client_configs {
            let Some(service) = client_config.service.take() else {
                return Err(bad(format!(
                    "a webhook of {kind} {name} has no clientConfig.service to redirect"
                )));
            };
            let path = service.path.unwrap_or_default();
            let path = path.trim_start_matches('/');
            client_config.url = Some(format!("{}/{path}", base_url.trim_end_matches('/')));
            client_config.ca_bundle = Some(ByteString(ca_pem.as_bytes().to_vec()));
        }
        out.push(configuration);
    }
    if out.is_empty() {
        return Err(bad("no Mutating- or ValidatingWebhookConfiguration".into()));
    }
    Ok(out)
}

/// Applies the webhook configurations (server-side).
pub async fn install_webhooks(
    client: &Client,
    configurations: &[WebhookConfiguration],
) -> Result<()> {
    for configuration in configurations {
        let name = configuration.name();
        let what = || format!("applying the webhook configuration {name}");
        match configuration {
            WebhookConfiguration::Mutating(m) => {
                Api::<MutatingWebhookConfiguration>::all(client.clone())
                    .patch(name, &apply_params(), &Patch::Apply(m))
                    .await
                    .map_err(kube_error(what()))?;
            }
            WebhookConfiguration::Validating(v) => {
                Api::<ValidatingWebhookConfiguration>::all(client.clone())
                    .patch(name, &apply_params(), &Patch::Apply(v))
                    .await
                    .map_err(kube_error(what()))?;
            }
        }
    }
    Ok(())
}

/// Waits until admission goes through the webhook: a server-side dry-run create of a
/// bare cluster in `namespace` comes back resolved. The API server picks up new webhook
/// configurations a moment after they are written, and the webhook may still be starting.
pub async fn wait_for_admission(client: &Client, namespace: &str, timeout: Duration) -> Result<()> {
    let api: Api<PostgresCluster> = Api::namespaced(client.clone(), namespace);
    let probe = PostgresCluster::new(
        "admission-probe",
        PostgresClusterSpec {
            storage: StorageSpec {
                size: k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
                storage_class_name: None,
            },
            ..Default::default()
        },
    );
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    let deadline = Instant::now() + timeout;
    loop {
        let last = match api.create(&params, &probe).await {
            Ok(created) if created.spec.instances.is_some() => return Ok(()),
            Ok(_) => "the object came back unresolved (webhook not called yet)".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(DevClusterError::Timeout {
                what: "waiting for the admission webhook to answer".into(),
                after: timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = include_str!("../../manifests/webhooks.yaml");
    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn as_json(c: &WebhookConfiguration) -> serde_json::Value {
        match c {
            WebhookConfiguration::Mutating(m) => serde_json::to_value(m),
            WebhookConfiguration::Validating(v) => serde_json::to_value(v),
        }
        .unwrap()
    }

    #[test]
    fn service_references_become_urls_with_the_ca_and_nothing_else_changes() {
        let derived = webhook_configurations(MANIFESTS, "https://127.0.0.1:8443/", CA).unwrap();
        let written: Vec<serde_json::Value> = serde_yaml::Deserializer::from_str(MANIFESTS)
            .map(|d| serde_json::Value::deserialize(d).unwrap())
            .collect();
        assert_eq!(derived.len(), written.len());
        let mut paths = Vec::new();
        for (ours, theirs) in derived.iter().zip(written) {
            let mut ours = as_json(ours);
            let mut theirs = theirs;
            for (webhook, original) in ours["webhooks"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .zip(theirs["webhooks"].as_array_mut().unwrap())
            {
                let config = webhook["clientConfig"].as_object_mut().unwrap();
                let url = config.remove("url").unwrap();
                let ca = config.remove("caBundle").unwrap();
                assert!(config.is_empty(), "only url and caBundle: {config:?}");
                let path = original["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap();
                assert_eq!(url, format!("https://127.0.0.1:8443{path}"));
                paths.push(path.to_owned());
                use base64::Engine as _;
                let ca = base64::engine::general_purpose::STANDARD
                    .decode(ca.as_str().unwrap())
                    .unwrap();
                assert_eq!(ca, CA.as_bytes());
                original["clientConfig"] = serde_json::json!({});
                webhook["clientConfig"] = serde_json::json!({});
            }
            let annotations = theirs["metadata"]["annotations"].as_object_mut().unwrap();
            assert!(annotations.remove(INJECT_CA_ANNOTATION).is_some());
            if annotations.is_empty() {
                theirs["metadata"]
                    .as_object_mut()
                    .unwrap()
                    .remove("annotations");
            }
            assert_eq!(ours, theirs);
        }
        assert_eq!(paths, ["/mutate", "/validate"]);
    }

    #[test]
    fn manifests_without_a_webhook_configuration_are_an_error() {
        let err = webhook_configurations("kind: Service\n", "https://x", CA).unwrap_err();
        assert!(
            err.to_string()
                .contains("no Mutating- or ValidatingWebhookConfiguration")
        );
        let no_service = "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: v}
webhooks:
- name: v.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig: {url: https://example.com/}
";
        let err = webhook_configurations(no_service, "https://x", CA).unwrap_err();
        assert!(err.to_string().contains("no clientConfig.service"), "{err}");
    }
}
