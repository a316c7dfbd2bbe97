//! The namespace-scoped install (`overlays/namespaced/`), on its own control plane: the
//! operator runs with a token of its ServiceAccount holding only what the overlay grants (its
//! ClusterRole bound in the watched namespace, its Lease Role) and `--watch-namespace` taken
//! from the overlay's Deployment, behind the overlay's webhook configurations. A cluster in
//! the watched namespace is resolved and materialized; one in another namespace is neither
//! admitted through pgpilot's webhooks nor touched, and the operator meets no refusal from
//! the API server (every watch stays in its namespace).

mod e2e;

use std::path::Path;
use std::time::Duration;

use pgpilot::devcluster::{
    self, DevCluster, OPERATOR_SERVICE_ACCOUNT, Operator, OperatorOptions, Options, free_ports,
};
use serde::Deserialize;

use e2e::{REPO, RESTRICTED};

const WATCHED: &str = "databases";
const OTHER: &str = "elsewhere";

fn kubectl(cluster: &DevCluster, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cluster
        .kubectl()
        .args(args)
        .current_dir(REPO)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("kubectl's stdin");
    }
    let out = child.wait_with_output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The overlay's objects of the given kinds, as YAML documents.
fn documents(built: &str, kinds: &[&str]) -> String {
    let mut out = String::new();
    for document in serde_yaml::Deserializer::from_str(built) {
        let value = serde_yaml::Value::deserialize(document).expect("kustomize's YAML");
        let kind = value["kind"].as_str().unwrap_or_default();
        if kinds.contains(&kind) {
            out.push_str(&serde_yaml::to_string(&value).unwrap());
            out.push_str("---\n");
        }
    }
    out
}

#[test]
fn a_namespaced_install_manages_its_namespace_only() {
    let bin_dir = devcluster::bin_dir(Path::new(REPO)).expect("control-plane binaries");
    let cluster = DevCluster::start(&Options::new(bin_dir)).expect("control plane starts");
    cluster.install_crd().expect("the CRD");
    let built = kubectl(&cluster, &["kustomize", "overlays/namespaced"], None);

    // The overlay's identity: no ClusterRoleBinding, the ClusterRole bound in the watched
    // namespace, the Lease Role in the operator's own.
    assert!(
        !built.contains("kind: ClusterRoleBinding"),
        "the overlay binds the ClusterRole cluster-wide"
    );
    for ns in [WATCHED, OTHER] {
        kubectl(&cluster, &["create", "namespace", ns], None);
        kubectl(&cluster, &["label", "namespace", ns, RESTRICTED], None);
    }
    let identity = documents(
        &built,
        &[
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "Role",
            "RoleBinding",
        ],
    );
    let kubeconfig = cluster
        .operator_kubeconfig_with(&identity)
        .expect("the overlay's identity and a token");
    let account = format!(
        "system:serviceaccount:{}:{}",
        OPERATOR_SERVICE_ACCOUNT.0, OPERATOR_SERVICE_ACCOUNT.1
    );
    let can = |args: &[&str]| {
        let mut full = vec!["auth", "can-i", "--as", &account];
        full.extend_from_slice(args);
        let out = cluster.kubectl().args(&full).output().expect("kubectl");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can(&["list", "secrets", "-n", WATCHED]));
    assert!(can(&["patch", "statefulsets", "-n", WATCHED]));
    for ns in [OTHER, "default", "kube-system"] {
        assert!(!can(&["list", "secrets", "-n", ns]), "secrets in {ns}");
        assert!(
            !can(&["watch", "postgresclusters.pgpilot.io", "-n", ns]),
            "clusters in {ns}"
        );
    }
    assert!(!can(&["list", "secrets", "--all-namespaces"]));

    // The operator with the arguments the overlay's Deployment adds.
    let deployment: serde_yaml::Value =
        serde_yaml::from_str(&documents(&built, &["Deployment"]).replace("---\n", ""))
            .expect("the Deployment");
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .filter(|a| a.starts_with("--watch-namespace"))
        .map(str::to_owned)
        .collect();
    assert_eq!(args, [format!("--watch-namespace={WATCHED}")]);
    let [port] = free_ports().expect("a free port");
    let log = cluster.work_dir().join("operator.log");
    let mut extra_args = vec![
        "--lease-namespace".to_owned(),
        OPERATOR_SERVICE_ACCOUNT.0.to_owned(),
        // Resyncs every 2 s: the check that the other namespace stays untouched follows
        // several rounds of them.
        "--resync-seconds".to_owned(),
        "2".to_owned(),
    ];
    extra_args.extend(args);
    let operator = Operator::start(OperatorOptions {
        program: env!("CARGO_BIN_EXE_pgpilot").into(),
        kubeconfig,
        cert_dir: cluster.webhook_cert_dir().to_owned(),
        listen: ([127, 0, 0, 1], port).into(),
        log: Some(log.clone()),
        extra_args,
    })
    .expect("the operator starts");
    let configurations = devcluster::webhook_configurations(
        &built,
        &format!("https://127.0.0.1:{port}"),
        cluster.ca_pem(),
    )
    .expect("the overlay's webhook configurations");
    cluster
        .install_webhooks(&configurations)
        .expect("webhooks installed");
    cluster
        .wait_for_admission_in(WATCHED, Duration::from_secs(30))
        .expect("admission in the watched namespace goes through the webhook");

    let sample = std::fs::read_to_string(format!("{REPO}/manifests/samples/minimal.yaml"))
        .expect("the minimal sample");
    for ns in [WATCHED, OTHER] {
        kubectl(&cluster, &["apply", "-n", ns, "-f", "-"], Some(&sample));
    }
    let name = serde_yaml::from_str::<serde_yaml::Value>(&sample).unwrap()["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let get = |kind: &str, ns: &str, object: &str| {
        cluster
            .kubectl()
            .args(["get", kind, object, "-n", ns, "-o", "json"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
    };
    // Watched: resolved at admission, then materialized.
    let resolved = get("postgrescluster", WATCHED, &name).expect("the watched cluster");
    assert!(
        resolved["spec"]["image"].is_string(),
        "not resolved: {resolved}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while get("statefulset", WATCHED, &name).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no StatefulSet in the watched namespace"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Elsewhere: stored as written (pgpilot's webhooks are not called there) and, after
    // rounds of resyncs of the watched cluster, still without a child or a status.
    operator
        .wait_for_reconciles(3, Duration::from_secs(6), Duration::from_secs(120))
        .expect("resyncs of the watched cluster");
    let stored = get("postgrescluster", OTHER, &name).expect("the other cluster");
    assert!(stored["spec"]["image"].is_null(), "resolved: {stored}");
    assert!(stored["status"].is_null(), "reconciled: {stored}");
    assert!(get("statefulset", OTHER, &name).is_none());
    let secrets = kubectl(
        &cluster,
        &[
            "get",
            "secrets",
            "-n",
            OTHER,
            "-l",
            "app.kubernetes.io/managed-by=pgpilot",
            "-o",
            "name",
        ],
        None,
    );
    assert!(secrets.trim().is_empty(), "{secrets}");
    // Every watch and read stayed where the RoleBinding allows it.
    let text = std::fs::read_to_string(&log).expect("the operator's log");
    assert!(
        !text.to_lowercase().contains("forbidden"),
        "the API server refused the operator something:\n{text}"
    );
    operator.check_alive().expect("the operator still runs");
}
