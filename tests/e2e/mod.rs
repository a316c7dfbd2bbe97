//! Shared by the end-to-end suites (`tests/e2e_*.rs`): one real control plane per test
//! binary, started on first use and shared by its tests (each works in its own namespace);
//! `kubectl` from the control plane's bin dir, run from the repository root as a user types
//! it. The processes stop when the test binary exits, whether it passes or fails (see
//! `pgpilot::devcluster::process`); after a failure the logs are kept and their path printed.

#![allow(dead_code)] // each suite uses its own part

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use kube::Api;
use pgpilot::api::{PostgresCluster, PostgresClusterSpec};
use pgpilot::config::Config;
use pgpilot::devcluster::{
    self, DevCluster, OPERATOR_SERVICE_ACCOUNT, Operator, OperatorOptions, Options, block_on,
    free_ports,
};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The label every test namespace carries: the API server's PodSecurity admission then
/// checks each pod pgpilot renders against the `restricted` Pod Security Standard (a
/// violating pod is never created).
pub const RESTRICTED: &str = "pod-security.kubernetes.io/enforce=restricted";

/// What a suite's control plane has installed.
pub enum Setup {
    /// The CRD alone: the API server's own schema and CEL validation, no webhook.
    CrdOnly,
    /// The CRD, the operator as a host process and the webhook configurations derived from
    /// `manifests/webhooks.yaml`.
    WithOperator,
}

pub struct Harness {
    pub cluster: DevCluster,
    pub operator: Option<Operator>,
}

impl Harness {
    pub fn start(setup: Setup) -> Harness {
        let started = std::time::Instant::now();
        let bin_dir = devcluster::bin_dir(Path::new(REPO)).expect("control-plane binaries");
        let cluster = DevCluster::start(&Options::new(bin_dir)).expect("control plane starts");
        cluster
            .install_crd()
            .expect("the API server accepts the CRD");
        let operator = match setup {
            Setup::CrdOnly => None,
            Setup::WithOperator => {
                let [port] = free_ports().expect("a free port");
                let webhooks =
                    std::fs::read_to_string(Path::new(REPO).join("manifests/webhooks.yaml"))
                        .expect("manifests/webhooks.yaml");
                let options = OperatorOptions {
                    program: env!("CARGO_BIN_EXE_pgpilot").into(),
                    // The operator's own ServiceAccount, as shipped: a missing permission fails.
                    kubeconfig: cluster
                        .operator_kubeconfig(Path::new(REPO))
                        .expect("the operator's ServiceAccount and RBAC"),
                    cert_dir: cluster.webhook_cert_dir().to_owned(),
                    listen: ([127, 0, 0, 1], port).into(),
                    log: Some(cluster.work_dir().join("operator.log")),
                    extra_args: vec![
                        "--lease-namespace".into(),
                        OPERATOR_SERVICE_ACCOUNT.0.into(),
                    ],
                };
                let (operator, _) = cluster
                    .start_operator(options, &webhooks, cluster.ca_pem())
                    .expect("the operator starts and admission goes through its webhooks");
                Some(operator)
            }
        };
        eprintln!(
            "e2e: control plane and operator ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Harness { cluster, operator }
    }

    /// Runs `kubectl ARGS` (no standard input).
    pub fn kubectl(&self, args: &[&str]) -> Run {
        self.run_kubectl(args, None)
    }

    /// Runs `kubectl ARGS` with `stdin` (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Run {
        self.run_kubectl(args, Some(stdin))
    }

    fn run_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut command: Command = self.cluster.kubectl();
        command
            .args(args)
            .current_dir(REPO)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl runs");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("a stdin pipe");
            pipe.write_all(text.as_bytes())
                .expect("writing kubectl's stdin");
        }
        let output = child.wait_with_output().expect("kubectl runs");
        Run {
            command: format!("kubectl {}", args.join(" ")),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Creates a namespace for one test, enforcing [`RESTRICTED`].
    pub fn namespace(&self, name: &str) -> String {
        self.kubectl(&["create", "namespace", name]).success();
        self.kubectl(&["label", "namespace", name, RESTRICTED])
            .success();
        name.to_owned()
    }

    /// The PostgresCluster as the API stores it, read with a kube client.
    pub fn stored(&self, namespace: &str, name: &str) -> Option<PostgresCluster> {
        block_on(async {
            let client = self.cluster.client().await.expect("a client");
            Api::<PostgresCluster>::namespaced(client, namespace)
                .get_opt(name)
                .await
                .expect("reading the PostgresCluster")
        })
    }
}

/// What a kubectl run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit code 0.
    #[track_caller]
    pub fn success(self) -> Run {
        assert_eq!(self.code, Some(0), "{} failed:\n{self}", self.command);
        self
    }

    /// Asserts a non-zero exit code.
    #[track_caller]
    pub fn failure(self) -> Run {
        assert_ne!(self.code, Some(0), "{} succeeded:\n{self}", self.command);
        assert!(self.code.is_some(), "{} was killed:\n{self}", self.command);
        self
    }

    /// The `Warning: ...` lines kubectl printed on stderr, without the prefix.
    pub fn warnings(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("Warning: "))
            .collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A sample from `manifests/samples/`, as text.
pub fn sample(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(REPO)
            .join("manifests/samples")
            .join(format!("{name}.yaml")),
    )
    .expect("a sample manifest")
}

/// Parses one PostgresCluster from YAML.
pub fn cluster(yaml: &str) -> PostgresCluster {
    serde_yaml::from_str(yaml).expect("a PostgresCluster")
}

/// What the webhook makes of `spec` on CREATE.
pub fn resolved(spec: &PostgresClusterSpec) -> PostgresClusterSpec {
    pgpilot::resolve::resolve(spec, None, &Config::default())
}

/// The `spec` of a PostgresCluster printed by `kubectl ... -o yaml`, as JSON (explicit
/// nulls included, unlike the typed form).
pub fn spec_json(yaml: &str) -> serde_json::Value {
    let value: serde_json::Value = serde_yaml::from_str(yaml).expect("YAML from kubectl");
    value["spec"].clone()
}

/// `text` with every run of whitespace made one space (kubectl wraps long lines).
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
