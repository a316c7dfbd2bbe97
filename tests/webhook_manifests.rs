//! The deployment manifests agree with each other and with the binary: the webhook
//! configurations reach the Service, the Service the container port, the mounted Secret is
//! the one cert-manager writes, and the container's arguments are ones `pgpilot` accepts.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Service};
use k8s_openapi::api::rbac::v1::ClusterRole;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");

/// Every document of every manifest file, as JSON.
fn documents() -> Vec<Value> {
    let mut out = Vec::new();
    for file in manifest_files() {
        let text = std::fs::read_to_string(Path::new(DIR).join(&file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !value.is_null() && file != "kustomization.yaml" {
                out.push(value);
            }
        }
    }
    out
}

fn manifest_files() -> BTreeSet<String> {
    std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .collect()
}

/// The one object of `kind` named `name`, read into its Kubernetes type.
fn object<T: DeserializeOwned>(kind: &str, name: &str) -> T {
    let found: Vec<Value> = documents()
        .into_iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind} {name}");
    serde_json::from_value(found[0].clone()).unwrap_or_else(|e| panic!("{kind} {name}: {e}"))
}

fn container() -> Container {
    let deployment: Deployment = object("Deployment", "pgpilot");
    deployment.spec.unwrap().template.spec.unwrap().containers[0].clone()
}

fn arg(container: &Container, flag: &str) -> String {
    let args = container.args.as_ref().unwrap();
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("no {flag}"));
    args[at + 1].clone()
}

#[test]
fn kustomization_lists_every_manifest() {
    let text = std::fs::read_to_string(Path::new(DIR).join("kustomization.yaml")).unwrap();
    let kustomization: Value = serde_yaml::from_str(&text).unwrap();
    let listed: BTreeSet<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let mut files = manifest_files();
    files.remove("kustomization.yaml");
    assert_eq!(listed, files);
}

#[test]
fn webhooks_reach_the_service_and_the_service_reaches_the_container() {
    let service: Service = object("Service", "pgpilot-webhook");
    let namespace = service.metadata.namespace.clone().unwrap();
    let port = &service.spec.as_ref().unwrap().ports.as_ref().unwrap()[0];
    let certificate = &documents()
        .into_iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == "pgpilot-webhook-tls")
        .expect("the serving Certificate");
    let dns_names = certificate["spec"]["dnsNames"].as_array().unwrap();
    assert!(dns_names.contains(&format!("pgpilot-webhook.{namespace}.svc").into()));

    // Both configurations read as their Kubernetes types; the checks below read the JSON,
    // the same for both.
    let _: MutatingWebhookConfiguration = object("MutatingWebhookConfiguration", "pgpilot");
    let _: ValidatingWebhookConfiguration = object("ValidatingWebhookConfiguration", "pgpilot");
    let inject = format!(
        "{namespace}/{}",
        certificate["metadata"]["name"].as_str().unwrap()
    );
    for (kind, path) in [
        ("MutatingWebhookConfiguration", "/mutate"),
        ("ValidatingWebhookConfiguration", "/validate"),
    ] {
        let configuration = documents().into_iter().find(|d| d["kind"] == kind).unwrap();
        assert_eq!(
            configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            inject
        );
        let hooks = configuration["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 1, "{kind}");
        let hook = &hooks[0];
        let target = &hook["clientConfig"]["service"];
        assert_eq!(target["name"], service.metadata.name.clone().unwrap());
        assert_eq!(target["namespace"], namespace);
        assert_eq!(target["path"], path);
        assert_eq!(target["port"], port.port);
        assert_eq!(hook["sideEffects"], "None", "{kind}");
        assert_eq!(hook["failurePolicy"], "Fail", "{kind}");
        assert_eq!(hook["timeoutSeconds"], 5, "{kind}");
        assert_eq!(hook["matchPolicy"], "Equivalent", "{kind}");
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]), "{kind}");
        assert_eq!(
            hook["rules"],
            json!([{
                "apiGroups": ["pgpilot.io"],
                "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["postgresclusters"],
                "scope": "Namespaced",
            }]),
            "{kind}"
        );
    }

    // Service → container port → --listen.
    let container = container();
    let container_port = &container.ports.as_ref().unwrap()[0];
    let target_port = match port.target_port.as_ref().unwrap() {
        k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => name.clone(),
        other => panic!("targetPort should name the container port, found {other:?}"),
    };
    assert_eq!(container_port.name.as_deref(), Some(target_port.as_str()));
    assert_eq!(
        arg(&container, "--listen"),
        format!("0.0.0.0:{}", container_port.container_port)
    );
}

#[test]
fn the_deployment_mounts_the_served_secret_and_is_locked_down() {
    let deployment: Deployment = object("Deployment", "pgpilot");
    let spec = deployment.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    let container = container();
    assert_eq!(
        container.image.as_deref(),
        Some("ghcr.io/pgpilot/pgpilot:0.1.0")
    );
    assert_eq!(container.args.as_ref().unwrap()[0], "run");

    let cert_dir = arg(&container, "--cert-dir");
    let mount = container
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.mount_path == cert_dir)
        .expect("the cert dir is mounted");
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == mount.name)
        .unwrap();
    let secret = volume.secret.as_ref().unwrap().secret_name.as_deref();
    assert_eq!(secret, Some("pgpilot-webhook-tls"));

    for (probe, path) in [
        (container.readiness_probe.as_ref(), "/readyz"),
        (container.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe.unwrap().http_get.as_ref().unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
    }
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&["ALL".to_owned()][..])
    );
    let pod_security = pod.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let resources = container.resources.as_ref().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
}

#[test]
fn the_cluster_role_has_no_wildcards() {
    let role: ClusterRole = object("ClusterRole", "pgpilot");
    for rule in role.rules.unwrap() {
        let names = rule
            .api_groups
            .iter()
            .flatten()
            .chain(rule.resources.iter().flatten())
            .chain(rule.verbs.iter());
        for name in names {
            assert!(!name.contains('*'), "wildcard in {rule:?}");
        }
    }
}
