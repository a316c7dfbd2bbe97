//! `pgpilot dev` (what `make dev` runs): a control plane and the operator in the
//! foreground, the CRD and webhooks installed, `.dev/kubeconfig` written; everything stops
//! on Ctrl-C or SIGTERM, or when a part of it dies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{
    DevCluster, DevClusterError, OperatorOptions, Options, Result, bin_dir, block_on, free_ports,
    io_error, webhook_configurations,
};

#[derive(Args, Debug)]
pub struct DevArgs {
    /// Directory with etcd, kube-apiserver, kube-controller-manager and kubectl. Default:
    /// $PGPILOT_CONTROLPLANE_BIN, else the output of hack/build-controlplane.sh.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The webhook's certificate directory (tls.crt, tls.key and the ca.crt that signed
    /// them), as `make certs` writes it.
    #[arg(long, default_value = "webhook-certs")]
    pub cert_dir: PathBuf,
    /// The manifests directory: webhook configurations are derived from its webhooks.yaml.
    #[arg(long, default_value = "manifests")]
    pub manifests: PathBuf,
    /// Where to write the admin kubeconfig.
    #[arg(long, default_value = ".dev/kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Address for the operator's webhook. Default: a free port on 127.0.0.1.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Operator configuration file, passed to `pgpilot run --config`.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs `pgpilot dev`; the exit code says whether it ended on request (0) or on failure.
pub fn main(args: DevArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgpilot dev: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: DevArgs) -> Result<()> {
    let repo_root = std::env::current_dir().map_err(io_error("reading the current directory"))?;
    // Everything that can be wrong with the inputs fails before anything starts.
    let ca_file = args.cert_dir.join("ca.crt");
    for file in ["tls.crt", "tls.key", "ca.crt"] {
        if !args.cert_dir.join(file).is_file() {
            return Err(DevClusterError::Manifest(format!(
                "{} is missing: run `make certs` first",
                args.cert_dir.join(file).display()
            )));
        }
    }
    let ca_pem = read(&ca_file)?;
    let manifests = read(&args.manifests.join("webhooks.yaml"))?;
    let listen = match args.listen {
        Some(addr) => addr,
        None => {
            let [port] = free_ports()?;
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    // Fails here, before anything starts, when the manifests cannot be used.
    webhook_configurations(&manifests, &format!("https://{listen}"), &ca_pem)?;
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => bin_dir(&repo_root)?,
    };
    let program = std::env::current_exe().map_err(io_error("finding the pgpilot binary"))?;

    eprintln!("pgpilot dev: starting etcd, kube-apiserver and kube-controller-manager");
    let cluster = DevCluster::start(&Options::new(bin_dir.clone()))?;
    // The CRD first, as `kubectl apply -k` does: the controller lists PostgresClusters at
    // once.
    cluster.install_crd()?;
    let mut extra_args = vec![
        "--lease-namespace".to_string(),
        super::OPERATOR_SERVICE_ACCOUNT.0.to_string(),
    ];
    if let Some(config) = &args.config {
        extra_args.extend(["--config".to_string(), absolute(&repo_root, config)]);
    }
    eprintln!("pgpilot dev: starting the operator on {listen}");
    let (operator, _) = cluster.start_operator(
        OperatorOptions {
            program,
            // The operator's own ServiceAccount and RBAC, as a deployment runs it.
            kubeconfig: cluster.operator_kubeconfig(&repo_root)?,
            cert_dir: args.cert_dir.clone(),
            listen,
            log: None,
            extra_args,
        },
        &manifests,
        &ca_pem,
    )?;

    if let Some(parent) = args.kubeconfig.parent() {
        std::fs::create_dir_all(parent)
            .map_err(io_error(format!("creating {}", parent.display())))?;
    }
    std::fs::copy(cluster.kubeconfig(), &args.kubeconfig)
        .map_err(io_error(format!("writing {}", args.kubeconfig.display())))?;
    let kubeconfig = absolute(&repo_root, &args.kubeconfig);
    println!(
        "
pgpilot dev is up: Kubernetes API at {server}, operator webhook at https://{listen}.
In another terminal:

    export KUBECONFIG={kubeconfig}
    export PATH={bin}:$PATH    # kubectl of the same version as the API server
    kubectl apply -f manifests/samples/minimal.yaml
    kubectl get pgc minimal -o yaml

Control-plane logs: {work}. Operator logs follow here. Ctrl-C stops everything.
",
        server = cluster.server(),
        bin = bin_dir.display(),
        work = cluster.work_dir().display(),
    );

    let outcome = block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt =
            signal(SignalKind::interrupt()).map_err(io_error("listening for SIGINT"))?;
        let mut terminate =
            signal(SignalKind::terminate()).map_err(io_error("listening for SIGTERM"))?;
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Ok("SIGINT"),
                _ = terminate.recv() => return Ok("SIGTERM"),
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    operator.check_alive()?;
                    cluster.check_alive()?;
                }
            }
        }
    });
    match &outcome {
        Ok(signal) => {
            eprintln!("pgpilot dev: {signal}: stopping the operator and the control plane")
        }
        Err(e) => eprintln!("pgpilot dev: {e}\npgpilot dev: stopping everything"),
    }
    operator.stop();
    cluster.stop();
    let _ = std::fs::remove_file(&args.kubeconfig);
    outcome.map(|_| ())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_error(format!("reading {}", path.display())))
}

fn absolute(base: &Path, path: &Path) -> String {
    base.join(path).display().to_string()
}
