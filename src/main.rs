//! The `pgpilot` command.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kube::CustomResourceExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use pgpilot::api::PostgresCluster;
use pgpilot::config::Config;
use pgpilot::manifest::{self, MAX_INPUT_BYTES};
use pgpilot::webhook::{self, Webhook};
use pgpilot::{resolve, validate};

#[derive(Parser)]
#[command(
    name = "pgpilot",
    version,
    about = "A PostgreSQL operator for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the PostgresCluster CustomResourceDefinition as YAML.
    Crd,
    /// Resolve PostgresCluster manifests offline, exactly as the admission webhook would:
    /// print the complete objects, or every field error. Exit 0: resolved; 1: invalid;
    /// 2: unreadable input.
    Resolve {
        /// A YAML file with one or more PostgresCluster documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Operator configuration file (YAML) laid over the compiled-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Serve the admission webhook (`/mutate`, `/validate`) over HTTPS.
    Webhook(ServeArgs),
    /// Run the controller alone: watch PostgresClusters and materialize their children.
    Controller {
        #[command(flatten)]
        controller: ControllerArgs,
        /// Operator configuration file (YAML) laid over the compiled-in defaults.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print every child object of resolved PostgresCluster manifests as YAML, as the
    /// controller would apply them (Secrets show `GENERATED-ONCE` for passwords).
    Render {
        /// A YAML file with one or more PostgresCluster documents; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace for documents that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the operator: every part in one process (the deployed default). For now the
    /// admission webhook; the controller joins it here.
    Run {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        controller: ControllerArgs,
    },
    /// A local control plane (etcd, kube-apiserver, kube-controller-manager) with the
    /// operator, the CRD and the webhooks, in the foreground until Ctrl-C (`make dev`).
    Dev(pgpilot::devcluster::dev::DevArgs),
}

#[derive(Args)]
struct ControllerArgs {
    /// Kubeconfig to use; by default in-cluster credentials, then `KUBECONFIG`.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease (default: `POD_NAMESPACE`, else `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Manage the PostgresClusters of this namespace only (default: every namespace). The
    /// operator then watches and reads only there: a RoleBinding of its ClusterRole in
    /// this namespace is enough (see overlays/namespaced/).
    #[arg(long, value_parser = namespace_name)]
    watch_namespace: Option<String>,
    /// Seconds between re-checks of an unchanged cluster (pod readiness, drift nobody
    /// reported); a re-check of an unchanged cluster writes nothing.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    resync_seconds: u64,
}

impl ControllerArgs {
    fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into())
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Address to serve HTTPS on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Directory with tls.crt and tls.key (a cert-manager Secret volume); a new pair there
    /// is served within seconds.
    #[arg(long)]
    cert_dir: PathBuf,
    /// Operator configuration file (YAML) laid over the compiled-in defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds after which a client's connection is closed gracefully, so that every
    /// client, the API server included, meets a renewed certificate within this time.
    #[arg(long, default_value_t = webhook::MAX_CONNECTION_AGE.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86400))]
    max_connection_age_seconds: u64,
}

/// Exit codes of `pgpilot resolve`.
const EXIT_INVALID: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => pgpilot::devcluster::dev::main(args),
        Command::Crd => {
            let yaml = serde_yaml::to_string(&PostgresCluster::crd()).expect("the CRD serializes");
            print_or_fail(&yaml)
        }
        Command::Resolve { file, config } => resolve_command(&file, config.as_deref()),
        // Identical until the controller exists: then `run` also spawns it in `serve`.
        Command::Webhook(args) => {
            let config = args.config.clone();
            serve_command(Some(args), None, config)
        }
        Command::Run { serve, controller } => {
            let config = serve.config.clone();
            serve_command(Some(serve), Some(controller), config)
        }
        Command::Controller { controller, config } => serve_command(None, Some(controller), config),
        Command::Render {
            file,
            namespace,
            config,
        } => render_command(&file, &namespace, config.as_deref()),
    }
}

fn serve_command(
    webhook: Option<ServeArgs>,
    controller: Option<ControllerArgs>,
    config: Option<PathBuf>,
) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = load_config(config.as_deref()).and_then(|mut config| {
        // Clusters' NetworkPolicies admit the operator's pods from the namespace it runs in,
        // unless the configuration names another.
        let np = &mut config.network_policy;
        if let Ok(ns) = std::env::var("POD_NAMESPACE")
            && np.operator_namespace == Config::default().network_policy.operator_namespace
            && pgpilot::names::is_dns1123_label(&ns)
        {
            np.operator_namespace = ns;
        }
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|e| format!("starting the async runtime: {e}"))?;
        runtime.block_on(serve(webhook, controller, config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the webhook, the controller, or both, until a signal or until one part ends.
async fn serve(
    webhook: Option<ServeArgs>,
    controller: Option<ControllerArgs>,
    config: Config,
) -> Result<(), String> {
    let shutdown = CancellationToken::new();
    // One set for the process: the webhook serves the controller's figures too.
    let metrics = std::sync::Arc::new(pgpilot::metrics::Metrics::default());
    let mut parts = JoinSet::new();
    parts.spawn(cancel_on_signal(shutdown.clone()));
    // The certificate first: a start without one fails naming it, before anything else.
    let webhook = match webhook {
        Some(args) => {
            let mut settings = webhook::Settings::new(args.listen, args.cert_dir, config.clone());
            settings.metrics = metrics.clone();
            settings.max_connection_age =
                std::time::Duration::from_secs(args.max_connection_age_seconds);
            Some(Webhook::bind(settings).await.map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let client = match &controller {
        Some(args) => Some(pgpilot::controller::client(args.kubeconfig.as_deref()).await?),
        None => None,
    };
    if let Some(mut webhook) = webhook {
        if let Some(client) = &client {
            webhook.read_clusters_with(client.clone());
        }
        parts.spawn(webhook.serve(shutdown.clone()));
    }
    if let (Some(args), Some(client)) = (controller, client) {
        let settings = pgpilot::controller::Settings {
            lease_namespace: args.lease_namespace(),
            resync: std::time::Duration::from_secs(args.resync_seconds),
            namespace: args.watch_namespace.clone(),
            metrics,
        };
        parts.spawn(pgpilot::controller::run_elected(
            client,
            config,
            settings,
            shutdown.clone(),
        ));
    }
    while let Some(ended) = parts.join_next().await {
        shutdown.cancel();
        if let Err(e) = ended {
            parts.abort_all();
            return Err(format!("a part of the operator failed: {e}"));
        }
    }
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM, only for SIGINT: {e}");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = terminate => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
    }
    shutdown.cancel();
}

/// A namespace's name (an RFC 1123 label), for `--watch-namespace`.
fn namespace_name(s: &str) -> Result<String, String> {
    if pgpilot::names::is_dns1123_label(s) {
        Ok(s.to_owned())
    } else {
        Err("a namespace name: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit".into())
    }
}

fn print_or_fail(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| format!("configuration {e}")),
        None => Ok(Config::default()),
    }
}

/// Reads at most `MAX_INPUT_BYTES` from a file or standard input, as UTF-8.
fn read_input(file: &std::path::Path) -> Result<String, String> {
    let name = file.display();
    let mut bytes = Vec::new();
    let limit = MAX_INPUT_BYTES as u64 + 1;
    let read = if file.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.map_err(|e| format!("{name}: {e}"))?;
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(format!("{name}: larger than {MAX_INPUT_BYTES} bytes"));
    }
    String::from_utf8(bytes).map_err(|e| format!("{name}: not UTF-8 text ({e})"))
}

fn resolve_command(file: &std::path::Path, config: Option<&std::path::Path>) -> ExitCode {
    let unreadable = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_UNREADABLE)
    };
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => return unreadable(e),
    };
    let text = match read_input(file) {
        Ok(t) => t,
        Err(e) => return unreadable(e),
    };
    let documents = match manifest::read_yaml_stream(&text) {
        Ok(c) => c,
        Err(e) => return unreadable(format!("{}: {e}", file.display())),
    };
    let mut output = String::new();
    let mut invalid = false;
    for (i, read) in documents.iter().enumerate() {
        let mut cluster = read.cluster.clone();
        cluster.spec = resolve::resolve(&cluster.spec, None, &config);
        let outcome = validate::validate_read(read, &cluster, None, &config);
        let name = cluster.metadata.name.as_deref().unwrap_or("<unnamed>");
        for w in &outcome.warnings {
            eprintln!("Warning: {name}: {w}");
        }
        if !outcome.is_valid() {
            invalid = true;
            eprintln!(
                "error: PostgresCluster {name:?} (document {}) is invalid:",
                i + 1
            );
            for e in &outcome.errors {
                eprintln!("  {e}");
            }
            continue;
        }
        match pgpilot::yaml::to_string(&cluster) {
            Ok(yaml) => {
                output.push_str("---\n");
                output.push_str(&yaml);
            }
            Err(e) => return unreadable(format!("document {}: {e}", i + 1)),
        }
    }
    // All or nothing: with any invalid document, nothing goes to standard output.
    if invalid {
        return ExitCode::from(EXIT_INVALID);
    }
    print_or_fail(&output)
}

fn render_command(
    file: &std::path::Path,
    namespace: &str,
    config: Option<&std::path::Path>,
) -> ExitCode {
    let unreadable = |message: String| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_UNREADABLE)
    };
    let config = match load_config(config) {
        Ok(c) => c,
        Err(e) => return unreadable(e),
    };
    let clusters = match read_input(file).and_then(|t| {
        manifest::read_yaml_stream(&t).map_err(|e| format!("{}: {e}", file.display()))
    }) {
        Ok(c) => c,
        Err(e) => return unreadable(e),
    };
    let mut output = String::new();
    for (i, read) in clusters.iter().enumerate() {
        let mut cluster = read.cluster.clone();
        cluster.spec = resolve::resolve(&cluster.spec, None, &config);
        cluster
            .metadata
            .namespace
            .get_or_insert_with(|| namespace.to_owned());
        let outcome = validate::validate_read(read, &cluster, None, &config);
        if !outcome.is_valid() {
            eprintln!("error: PostgresCluster (document {}) is invalid:", i + 1);
            for e in &outcome.errors {
                eprintln!("  {e}");
            }
            return ExitCode::from(EXIT_INVALID);
        }
        let objects = pgpilot::render::render(&cluster).and_then(|r| r.objects());
        match objects {
            Ok(objects) => {
                for o in objects {
                    output.push_str("---\n");
                    output.push_str(&pgpilot::yaml::to_string(&o).unwrap_or_default());
                }
            }
            Err(e) => return unreadable(format!("document {}: {e}", i + 1)),
        }
    }
    print_or_fail(&output)
}
