//! Shared by the reconciler suites: a control plane with the operator (`pgpilot run`, a
//! 3-second resync) and its webhooks, kubectl helpers, and polling.

#![allow(dead_code)] // each suite uses its own part

#[path = "../e2e/mod.rs"]
mod e2e;
pub mod link;
#[allow(unused_imports)]
pub use e2e::{REPO, Run, sample};
pub use pgpilot::devcluster::{OPERATOR_SERVICE_ACCOUNT, Operator};

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use pgpilot::devcluster::{
    self, DevCluster, OperatorOptions, Options, free_ports, webhook_configurations,
};

pub struct Env {
    pub cluster: DevCluster,
    pub operator: Operator,
    pub configurations: Vec<devcluster::WebhookConfiguration>,
}

/// The operator's resync: 3 s by default so the suites see re-checks quickly;
/// `PGPILOT_E2E_RESYNC_SECONDS` overrides it (the scale run uses the production 60 s).
pub fn resync_seconds() -> u64 {
    std::env::var("PGPILOT_E2E_RESYNC_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

pub fn operator(cluster: &DevCluster, log: &str, extra: &[&str]) -> Operator {
    operator_via(cluster, None, log, extra)
}

/// [`operator`], reaching the API server at `server` (a [`link::Link`]) instead of directly.
pub fn operator_via(
    cluster: &DevCluster,
    server: Option<&str>,
    log: &str,
    extra: &[&str],
) -> Operator {
    let [port] = free_ports().expect("a free port");
    // The operator's own ServiceAccount, as shipped: a missing permission fails.
    let mut kubeconfig = cluster
        .operator_kubeconfig(Path::new(REPO))
        .expect("the operator's ServiceAccount and RBAC");
    if let Some(server) = server {
        let text = std::fs::read_to_string(&kubeconfig).expect("the operator's kubeconfig");
        let direct = format!("server: {}", cluster.server());
        assert!(text.contains(&direct), "{text}");
        kubeconfig = cluster.work_dir().join(format!("{log}.kubeconfig"));
        std::fs::write(
            &kubeconfig,
            text.replace(&direct, &format!("server: {server}")),
        )
        .expect("writing a kubeconfig");
    }
    Operator::start(OperatorOptions {
        program: env!("CARGO_BIN_EXE_pgpilot").into(),
        kubeconfig,
        cert_dir: cluster.webhook_cert_dir().to_owned(),
        listen: ([127, 0, 0, 1], port).into(),
        log: Some(cluster.work_dir().join(log)),
        extra_args: [
            "--resync-seconds".to_owned(),
            resync_seconds().to_string(),
            "--lease-namespace".to_owned(),
            OPERATOR_SERVICE_ACCOUNT.0.to_owned(),
        ]
        .into_iter()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect(),
    })
    .expect("the operator starts")
}

pub static ENV: LazyLock<Env> = LazyLock::new(|| {
    let bin_dir = devcluster::bin_dir(Path::new(REPO)).expect("control-plane binaries");
    let cluster = DevCluster::start(&Options::new(bin_dir)).expect("control plane starts");
    cluster.install_crd().expect("the CRD is accepted");
    let operator = operator(&cluster, "operator.log", &[]);
    let manifests =
        std::fs::read_to_string(Path::new(REPO).join("manifests/webhooks.yaml")).unwrap();
    let configurations =
        webhook_configurations(&manifests, &operator.base_url(), cluster.ca_pem()).unwrap();
    cluster.install_webhooks(&configurations).unwrap();
    cluster.wait_for_admission(Duration::from_secs(30)).unwrap();
    Env {
        cluster,
        operator,
        configurations,
    }
});

pub fn kubectl(args: &[&str]) -> Run {
    let mut command = ENV.cluster.kubectl();
    command.args(args).current_dir(REPO);
    run(command, &format!("kubectl {}", args.join(" ")), None)
}

pub fn kubectl_stdin(args: &[&str], stdin: &str) -> Run {
    let mut command = ENV.cluster.kubectl();
    command.args(args).current_dir(REPO);
    run(command, &format!("kubectl {}", args.join(" ")), Some(stdin))
}

/// Runs `command` to its end, with `stdin` as its standard input (or none), and keeps
/// what it printed.
pub fn run(mut command: std::process::Command, name: &str, stdin: Option<&str>) -> Run {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Run {
        command: name.to_owned(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Creates a namespace enforcing the `restricted` Pod Security Standard.
pub fn namespace(name: &str) -> String {
    kubectl(&["create", "namespace", name]).success();
    kubectl(&["label", "namespace", name, e2e::RESTRICTED]).success();
    name.to_owned()
}

/// `kind/name` of every object pgpilot manages for `cluster` in `ns`.
pub fn children(ns: &str, cluster: &str) -> BTreeSet<String> {
    let kinds = "serviceaccounts,roles,rolebindings,configmaps,secrets,services,networkpolicies,statefulsets,poddisruptionbudgets,cronjobs,deployments,jobs";
    let run = kubectl(&[
        "get",
        kinds,
        "-n",
        ns,
        "-l",
        &format!("pgpilot.io/cluster={cluster}"),
        "-o",
        "name",
    ])
    .success();
    run.stdout.lines().map(str::to_owned).collect()
}

pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn jsonpath(ns: &str, object: &str, path: &str) -> String {
    kubectl(&["get", object, "-n", ns, "-o", &format!("jsonpath={path}")]).stdout
}

pub const MINIMAL_CHILDREN: [&str; 13] = [
    "serviceaccount/minimal-patroni",
    "role.rbac.authorization.k8s.io/minimal-patroni",
    "rolebinding.rbac.authorization.k8s.io/minimal-patroni",
    "configmap/minimal-patroni",
    "secret/minimal-superuser",
    "secret/minimal-replication",
    "secret/minimal-patroni-api",
    "secret/minimal-exporter",
    "service/minimal-primary",
    "service/minimal-replicas",
    "service/minimal-pods",
    "statefulset.apps/minimal",
    "poddisruptionbudget.policy/minimal",
];

pub fn apply_minimal(ns: &str) {
    kubectl(&["apply", "-n", ns, "-f", "manifests/samples/minimal.yaml"]).success();
    eventually("every child of minimal", Duration::from_secs(30), || {
        let got = children(ns, "minimal");
        MINIMAL_CHILDREN
            .iter()
            .all(|c| got.contains(*c))
            .then_some(())
    });
}

/// Write requests to the kinds pgpilot manages, from the API server's own metrics.
pub fn writes() -> u64 {
    let metrics = kubectl(&["get", "--raw", "/metrics"]).success().stdout;
    let kinds = [
        "configmaps",
        "secrets",
        "services",
        "statefulsets",
        "poddisruptionbudgets",
        "cronjobs",
        "deployments",
        "jobs",
        "serviceaccounts",
        "roles",
        "rolebindings",
        "postgresclusters",
    ];
    metrics
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            [
                "verb=\"PATCH\"",
                "verb=\"POST\"",
                "verb=\"PUT\"",
                "verb=\"DELETE\"",
                "verb=\"APPLY\"",
            ]
            .iter()
            .any(|v| l.contains(v))
        })
        .filter(|l| {
            kinds
                .iter()
                .any(|k| l.contains(&format!("resource=\"{k}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// PIDs of `pgpilot run` processes attached to this control plane.
pub fn operator_pids() -> Vec<u32> {
    let kubeconfig = ENV.cluster.kubeconfig().to_string_lossy().into_owned();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(" run ") && cmdline.contains(&kubeconfig) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILL to every operator process: no graceful shutdown, whatever it was doing.
pub fn kill_operators() {
    for pid in operator_pids() {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}

/// Deletes the webhook configurations: admission then stores objects as written.
pub fn remove_webhooks() {
    for c in &ENV.configurations {
        let kind = match c {
            pgpilot::devcluster::WebhookConfiguration::Mutating(_) => {
                "mutatingwebhookconfiguration"
            }
            pgpilot::devcluster::WebhookConfiguration::Validating(_) => {
                "validatingwebhookconfiguration"
            }
        };
        kubectl(&["delete", kind, c.name()]).success();
    }
}

/// `kubectl patch pgc/minimal` with a merge patch, through admission.
pub fn patch_minimal(ns: &str, patch: &str) {
    kubectl(&[
        "patch",
        "pgc",
        "-n",
        ns,
        "minimal",
        "--type=merge",
        "-p",
        patch,
    ])
    .success();
}

/// `kubectl wait --for=condition=Reconciled pgc/minimal`.
pub fn wait_reconciled(ns: &str) {
    kubectl(&[
        "wait",
        "-n",
        ns,
        "--for=condition=Reconciled",
        "pgc/minimal",
        "--timeout=30s",
    ])
    .success();
}

/// The number of PostgresClusters in the control plane, in every namespace.
pub fn cluster_count() -> u64 {
    kubectl(&["get", "pgc", "-A", "-o", "name"])
        .success()
        .stdout
        .lines()
        .count() as u64
}

/// Waits until `operator` has had time for `rounds` more resyncs of every cluster in the
/// control plane *and* has finished that many more passes (its successful reconciles, from
/// its metrics), so that a check that nothing changed follows real resyncs however slow the
/// machine is.
pub fn wait_for_resyncs(operator: &Operator, rounds: u64) {
    let floor = Duration::from_secs(rounds * resync_seconds());
    operator
        .wait_for_reconciles(
            rounds * cluster_count(),
            floor,
            Duration::from_secs(60) + floor * 20,
        )
        .unwrap_or_else(|e| panic!("{rounds} rounds of resyncs: {e}"));
}
