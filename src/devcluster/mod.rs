//! A real Kubernetes control plane on loopback, for the end-to-end tests and `make dev`.
//!
//! [`DevCluster::start`] runs etcd, kube-apiserver and kube-controller-manager (built from
//! Go modules by `hack/build-controlplane.sh`) on free 127.0.0.1 ports, with a fresh CA,
//! serving and client certificates and service-account keys, writes a kubeconfig and waits
//! until the API is ready and the `default` ServiceAccount exists. [`install`] puts the
//! CRD and the webhook configurations (derived from `manifests/webhooks.yaml`) into it, and
//! [`Operator`] runs `pgpilot run` against it as a host process. Everything stops on drop,
//! on a panic, and when the process exits (see [`process`]); the work directory goes with
//! it, unless something failed: then its logs are kept and their path printed.
//!
//! The API here is blocking (the tests drive `kubectl`, `pgpilot dev` waits on signals);
//! the async parts run on a private runtime, so it may be called from any thread.

pub mod dev;
pub mod install;
mod operator;
mod pki;
pub mod process;

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use install::{WebhookConfiguration, webhook_configurations};
pub use operator::{Operator, OperatorOptions};
pub use pki::Pki;
use process::{Supervised, Teardown};

/// The environment variable naming the directory with the control-plane binaries.
pub const BIN_DIR_ENV: &str = "PGPILOT_CONTROLPLANE_BIN";
/// Set to `1` to keep the work directory (logs, certificates, etcd data) even on success.
pub const KEEP_ENV: &str = "PGPILOT_KEEP_WORKDIR";

const WORK_DIR_PREFIX: &str = "pgpilot-devcluster-";
/// A kept work directory (logs of a failure) carries this file; others left behind by a
/// killed process are removed by the next start.
const KEEP_MARKER: &str = "KEPT";
/// What a component logs when another process took its port first.
const PORT_TAKEN: &str = "address already in use";
const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];

#[derive(Debug, thiserror::Error)]
pub enum DevClusterError {
    #[error("finding the control-plane binaries: {0}")]
    Binaries(String),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("generating the control plane's certificates: {0}")]
    Certificates(#[from] rcgen::Error),
    #[error("{name} exited ({status}) while {what}; last lines of {log}:\n{tail}")]
    Exited {
        name: String,
        status: String,
        what: String,
        log: String,
        tail: String,
    },
    #[error("timed out after {after:?} {what}; last error: {last}")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    #[error("{what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("{0}")]
    Manifest(String),
}

pub type Result<T, E = DevClusterError> = std::result::Result<T, E>;

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> DevClusterError {
    let what = what.into();
    move |source| DevClusterError::Io { what, source }
}

pub(crate) fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> DevClusterError {
    let what = what.into();
    move |source| DevClusterError::Kube { what, source }
}

/// How to start a control plane.
pub struct Options {
    /// Holds `etcd`, `kube-apiserver`, `kube-controller-manager` and `kubectl`.
    pub bin_dir: PathBuf,
    /// Parent of the work directory; the system's temporary directory by default.
    pub work_root: Option<PathBuf>,
    /// The longest each component may take to become ready.
    pub ready_timeout: Duration,
}

impl Options {
    pub fn new(bin_dir: PathBuf) -> Options {
        Options {
            bin_dir,
            work_root: None,
            ready_timeout: Duration::from_secs(90),
        }
    }
}

/// The directory with the control-plane binaries: `$PGPILOT_CONTROLPLANE_BIN`, or else
/// whatever `hack/build-controlplane.sh` under `repo_root` prints (it builds them on a cache
/// miss, which takes minutes; its progress goes to our standard error).
pub fn bin_dir(repo_root: &Path) -> Result<PathBuf> {
    let dir = match std::env::var_os(BIN_DIR_ENV).filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = repo_root.join("hack/build-controlplane.sh");
            let output = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| DevClusterError::Binaries(format!("running {script:?}: {e}")))?;
            if !output.status.success() {
                return Err(DevClusterError::Binaries(format!(
                    "{} failed ({})",
                    script.display(),
                    output.status
                )));
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            PathBuf::from(stdout.lines().last().unwrap_or_default().trim())
        }
    };
    let missing: Vec<&str> = BINARIES
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(DevClusterError::Binaries(format!(
            "{} lacks {} (set {BIN_DIR_ENV} to the output of hack/build-controlplane.sh)",
            dir.display(),
            missing.join(", ")
        )));
    }
    Ok(dir)
}

/// A running control plane; stopped, and its work directory removed, on drop.
pub struct DevCluster {
    inner: Arc<Cluster>,
}

struct Cluster {
    bin_dir: PathBuf,
    work_dir: PathBuf,
    kubeconfig: PathBuf,
    api_port: u16,
    pki: Pki,
    webhook_cert_dir: PathBuf,
    /// etcd, kube-apiserver, kube-controller-manager, in start order.
    processes: Mutex<Vec<Arc<Supervised>>>,
    /// kube-apiserver's arguments, to start it again the same way.
    api_server_args: Mutex<Vec<String>>,
    /// Keep the work directory: starting failed.
    keep: AtomicBool,
    torn_down: AtomicBool,
}

impl DevCluster {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until they serve.
    /// A port taken between choosing and binding it (another suite started at the same
    /// moment) means a fresh attempt on new ports.
    pub fn start(options: &Options) -> Result<DevCluster> {
        let mut attempt = 1;
        loop {
            match DevCluster::start_once(options) {
                Err(DevClusterError::Exited { ref tail, .. })
                    if attempt < 3 && tail.contains(PORT_TAKEN) =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(options: &Options) -> Result<DevCluster> {
        let started = Instant::now();
        let root = options.work_root.clone().unwrap_or_else(std::env::temp_dir);
        remove_abandoned_work_dirs(&root);
        let pki = Pki::generate()?;
        let work_dir = make_work_dir(&root)?;
        let files = match pki.write(&work_dir) {
            Ok(files) => files,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work_dir);
                return Err(io_error("writing the certificates")(e));
            }
        };
        let [etcd_port, peer_port, api_port, kcm_port] = free_ports()?;
        let inner = Arc::new(Cluster {
            bin_dir: options.bin_dir.clone(),
            kubeconfig: work_dir.join("kubeconfig"),
            work_dir,
            api_port,
            webhook_cert_dir: files.webhook_dir.clone(),
            pki,
            processes: Mutex::new(Vec::new()),
            api_server_args: Mutex::new(Vec::new()),
            keep: AtomicBool::new(false),
            torn_down: AtomicBool::new(false),
        });
        let weak: Weak<dyn Teardown> = Arc::downgrade(&inner) as Weak<Cluster>;
        process::register(weak);
        // From here on, an error drops `cluster`, which stops what was started.
        let cluster = DevCluster { inner };
        if let Err(e) = block_on(cluster.launch(options, &files, [etcd_port, peer_port, kcm_port]))
        {
            let retried =
                matches!(&e, DevClusterError::Exited { tail, .. } if tail.contains(PORT_TAKEN));
            cluster.inner.keep.store(!retried, Ordering::SeqCst);
            return Err(e);
        }
        eprintln!(
            "devcluster: control plane ready at {} in {:.1}s (work dir {})",
            cluster.server(),
            started.elapsed().as_secs_f64(),
            cluster.work_dir().display()
        );
        Ok(cluster)
    }

    async fn launch(
        &self,
        options: &Options,
        files: &pki::PkiFiles,
        [etcd_port, peer_port, kcm_port]: [u16; 3],
    ) -> Result<()> {
        let c = &self.inner;
        let server = self.server();
        let kcm_kubeconfig = c.work_dir.join("kcm.kubeconfig");
        let certificate = |pair: &pki::Pair| {
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}\n",
                b64(&pair.cert_pem),
                b64(&pair.key_pem)
            )
        };
        write_kubeconfig(
            &c.kubeconfig,
            &server,
            &c.pki.ca.cert_pem,
            &certificate(&c.pki.admin),
        )?;
        write_kubeconfig(
            &kcm_kubeconfig,
            &server,
            &c.pki.ca.cert_pem,
            &certificate(&c.pki.controller_manager),
        )?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = self.spawn(
            "etcd",
            &[
                "--name=default".into(),
                format!("--data-dir={}", c.work_dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
            ],
        )?;
        wait_for(
            &etcd,
            "waiting for etcd /health",
            options.ready_timeout,
            || async move { etcd_healthy(etcd_port) },
        )
        .await?;

        let path = |p: &Path| p.display().to_string();
        let api_server_args = [
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", c.api_port),
            format!("--tls-cert-file={}", path(&files.apiserver_cert)),
            format!("--tls-private-key-file={}", path(&files.apiserver_key)),
            format!("--client-ca-file={}", path(&files.ca_cert)),
            // Room for thousands of Services: scale runs create two per cluster.
            "--service-cluster-ip-range=10.0.0.0/16".into(),
            format!("--service-account-issuer={server}"),
            format!(
                "--service-account-key-file={}",
                path(&files.service_account_public)
            ),
            format!(
                "--service-account-signing-key-file={}",
                path(&files.service_account_key)
            ),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            // With a loopback advertise address, the default endpoint reconciler fails
            // every 10 s ("may not be in the loopback range").
            "--endpoint-reconciler-type=none".into(),
            // Webhooks and aggregated APIs named by Service are called at the Service's
            // endpoints: no kube-proxy here routes its cluster IP.
            "--enable-aggregator-routing=true".into(),
        ];
        *process::lock(&c.api_server_args) = api_server_args.to_vec();
        let apiserver = self.spawn("kube-apiserver", &api_server_args)?;
        let client = self.client().await?;
        self.wait_for_api_server(&apiserver, &client, options.ready_timeout)
            .await?;

        let kcm_kubeconfig = path(&kcm_kubeconfig);
        let controller_manager = self.spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={kcm_kubeconfig}"),
                format!("--authentication-kubeconfig={kcm_kubeconfig}"),
                format!("--authorization-kubeconfig={kcm_kubeconfig}"),
                // The API server has no request-header CA to look up.
                "--authentication-skip-lookup=true".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--leader-elect=false".into(),
                format!(
                    "--service-account-private-key-file={}",
                    path(&files.service_account_key)
                ),
                format!("--root-ca-file={}", path(&files.ca_cert)),
                "--use-service-account-credentials=true".into(),
                format!("--cluster-signing-cert-file={}", path(&files.ca_cert)),
                format!("--cluster-signing-key-file={}", path(&files.ca_key)),
                "--controllers=*".into(),
            ],
        )?;
        // The ServiceAccount controller starts a few seconds in; until then no namespace
        // gets its `default` ServiceAccount, and no pod can be created.
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        wait_for(
            &controller_manager,
            "waiting for the default ServiceAccount",
            options.ready_timeout,
            || {
                let accounts = accounts.clone();
                async move {
                    accounts
                        .get_opt("default")
                        .await
                        .map(|sa| sa.is_some())
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await?;
        for p in [&etcd, &apiserver] {
            check_alive(p, "starting the control plane")?;
        }
        Ok(())
    }

    async fn wait_for_api_server(
        &self,
        apiserver: &Supervised,
        client: &kube::Client,
        timeout: Duration,
    ) -> Result<()> {
        wait_for(
            apiserver,
            "waiting for kube-apiserver /readyz",
            timeout,
            || {
                let client = client.clone();
                async move {
                    let readyz = http::Request::get("/readyz")
                        .body(Vec::new())
                        .expect("a valid request");
                    client
                        .request_text(readyz)
                        .await
                        .map(|_| true)
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await
    }

    /// Stops kube-apiserver (SIGTERM, as an upgrade or a crash-restart of the control
    /// plane does) and starts it again with the same arguments; returns once it answers
    /// `/readyz`, with how long it was gone. Its previous log is kept as
    /// `kube-apiserver.log.N`.
    pub fn restart_api_server(&self, timeout: Duration) -> Result<Duration> {
        let c = &self.inner;
        let old = {
            let mut processes = process::lock(&c.processes);
            let at = processes
                .iter()
                .position(|p| p.name() == "kube-apiserver")
                .ok_or_else(|| DevClusterError::Manifest("kube-apiserver is not running".into()))?;
            processes.remove(at)
        };
        let stopped = Instant::now();
        old.stop(Duration::from_secs(10));
        if let Some(log) = old.log() {
            let mut n = 1;
            while log.with_extension(format!("log.{n}")).exists() {
                n += 1;
            }
            let _ = std::fs::rename(log, log.with_extension(format!("log.{n}")));
        }
        let args = process::lock(&c.api_server_args).clone();
        let apiserver = self.spawn("kube-apiserver", &args)?;
        block_on(async {
            let client = self.client().await?;
            self.wait_for_api_server(&apiserver, &client, timeout).await
        })?;
        Ok(stopped.elapsed())
    }

    fn spawn(&self, name: &str, args: &[String]) -> Result<Arc<Supervised>> {
        let log = self.inner.work_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(io_error(format!("creating {log:?}")))?;
        let stderr = file
            .try_clone()
            .map_err(io_error(format!("opening {log:?}")))?;
        let mut command = Command::new(self.inner.bin_dir.join(name));
        command
            .args(args)
            .current_dir(&self.inner.work_dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr);
        let process = Supervised::spawn(name, command, Some(log))
            .map_err(io_error(format!("starting {name}")))?;
        process::lock(&self.inner.processes).push(process.clone());
        Ok(process)
    }

    /// The admin kubeconfig (CN `admin`, O `system:masters`), self-contained.
    pub fn kubeconfig(&self) -> &Path {
        &self.inner.kubeconfig
    }

    /// `https://127.0.0.1:PORT`.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.inner.api_port)
    }

    pub fn bin_dir(&self) -> &Path {
        &self.inner.bin_dir
    }

    pub fn work_dir(&self) -> &Path {
        &self.inner.work_dir
    }

    /// The cluster CA, PEM: it signs the API server's and the webhook's certificates.
    pub fn ca_pem(&self) -> &str {
        &self.inner.pki.ca.cert_pem
    }

    /// `tls.crt`, `tls.key`, `ca.crt` for a webhook on 127.0.0.1, signed by the cluster CA.
    pub fn webhook_cert_dir(&self) -> &Path {
        &self.inner.webhook_cert_dir
    }

    /// `kubectl` from the bin dir (the control plane's own version), using this cluster's
    /// kubeconfig and a discovery cache inside the work directory.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(self.inner.bin_dir.join("kubectl"));
        command
            .env("KUBECONFIG", &self.inner.kubeconfig)
            .env("KUBECACHEDIR", self.inner.work_dir.join("kubectl-cache"))
            .env_remove("KUBECTL_EXTERNAL_DIFF")
            .stdin(Stdio::null());
        command
    }

    /// A client for the current async runtime (a `kube::Client` belongs to the runtime it
    /// was made on, so none is kept here).
    pub async fn client(&self) -> Result<kube::Client> {
        let what = || format!("loading {}", self.inner.kubeconfig.display());
        let kubeconfig = Kubeconfig::read_from(&self.inner.kubeconfig)
            .map_err(|e| DevClusterError::Manifest(format!("{}: {e}", what())))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| DevClusterError::Manifest(format!("{}: {e}", what())))?;
        kube::Client::try_from(config).map_err(kube_error("building a client"))
    }

    /// Applies the CRD and waits until it is established and served.
    pub fn install_crd(&self) -> Result<()> {
        block_on(async {
            let client = self.client().await?;
            install::install_crd(&client, Duration::from_secs(30)).await?;
            Ok(())
        })
    }

    /// Installs the operator's identity as shipped (`manifests/namespace.yaml` and
    /// `manifests/rbac.yaml` from `repo`) and writes a kubeconfig with a token of its
    /// ServiceAccount (`pgpilot-system/pgpilot`, minted through the TokenRequest API): an
    /// operator run with it holds exactly the permissions users grant it, so a missing one
    /// fails the suites.
    pub fn operator_kubeconfig(&self, repo: &Path) -> Result<PathBuf> {
        let manifests = repo.join("manifests");
        let mut text = String::new();
        for file in ["namespace.yaml", "rbac.yaml"] {
            let path = manifests.join(file);
            text.push_str(&std::fs::read_to_string(&path).map_err(io_error("reading manifests"))?);
            text.push_str("\n---\n");
        }
        self.operator_kubeconfig_with(&text)
    }

    /// The same with the identity in `manifests` (YAML documents: the namespace, the
    /// ServiceAccount and the RBAC objects of an install, e.g. an overlay's).
    pub fn operator_kubeconfig_with(&self, manifests: &str) -> Result<PathBuf> {
        let run = |args: &[&str], input: Option<&str>| -> Result<String> {
            let mut child = self
                .kubectl()
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(io_error("running kubectl"))?;
            if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
                use std::io::Write;
                pipe.write_all(text.as_bytes())
                    .map_err(io_error("writing to kubectl"))?;
            }
            let out = child
                .wait_with_output()
                .map_err(io_error("running kubectl"))?;
            if !out.status.success() {
                return Err(DevClusterError::Manifest(format!(
                    "kubectl {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        run(&["apply", "-f", "-"], Some(manifests))?;
        let token = run(
            &[
                "create",
                "token",
                OPERATOR_SERVICE_ACCOUNT.1,
                "-n",
                OPERATOR_SERVICE_ACCOUNT.0,
                "--duration=48h",
            ],
            None,
        )?;
        let path = self.inner.work_dir.join("operator.kubeconfig");
        let user = format!("    token: {token}\n");
        write_kubeconfig(&path, &self.server(), &self.inner.pki.ca.cert_pem, &user)?;
        Ok(path)
    }

    /// Applies webhook configurations (see [`webhook_configurations`]).
    pub fn install_webhooks(&self, configurations: &[WebhookConfiguration]) -> Result<()> {
        block_on(async {
            let client = self.client().await?;
            install::install_webhooks(&client, configurations).await
        })
    }

    /// Waits until creating a PostgresCluster goes through the webhook (see
    /// [`install::wait_for_admission`]).
    pub fn wait_for_admission(&self, timeout: Duration) -> Result<()> {
        self.wait_for_admission_in("default", timeout)
    }

    /// The same in `namespace` (webhooks limited to some namespaces).
    pub fn wait_for_admission_in(&self, namespace: &str, timeout: Duration) -> Result<()> {
        block_on(async {
            let client = self.client().await?;
            install::wait_for_admission(&client, namespace, timeout).await
        })
    }

    /// Starts the operator and routes admission to it: the webhook configurations of
    /// `webhooks_yaml` (the text of `manifests/webhooks.yaml`) pointed at its address with
    /// `ca_pem` (the CA of its serving certificate), installed; returns once a create goes
    /// through the webhook. The CRD must be installed.
    pub fn start_operator(
        &self,
        options: OperatorOptions,
        webhooks_yaml: &str,
        ca_pem: &str,
    ) -> Result<(Operator, Vec<WebhookConfiguration>)> {
        let base_url = format!("https://{}", options.listen);
        let configurations = webhook_configurations(webhooks_yaml, &base_url, ca_pem)?;
        let operator = Operator::start(options)?;
        self.install_webhooks(&configurations)?;
        self.wait_for_admission(Duration::from_secs(30))?;
        Ok((operator, configurations))
    }

    /// Every process of the control plane is still running.
    pub fn check_alive(&self) -> Result<()> {
        for p in process::lock(&self.inner.processes).iter() {
            check_alive(p, "running")?;
        }
        Ok(())
    }

    /// Freezes kube-apiserver (SIGSTOP): requests to it hang until their clients give
    /// up, as when the control plane is unreachable. [`DevCluster::resume_api_server`]
    /// lets it go on where it stopped.
    pub fn pause_api_server(&self) {
        self.signal_api_server(libc::SIGSTOP);
    }

    /// Undoes [`DevCluster::pause_api_server`] (SIGCONT).
    pub fn resume_api_server(&self) {
        self.signal_api_server(libc::SIGCONT);
    }

    fn signal_api_server(&self, sig: libc::c_int) {
        for p in process::lock(&self.inner.processes).iter() {
            if p.name() == "kube-apiserver" {
                // SAFETY: kill(2) on a child this cluster started and still supervises.
                unsafe {
                    libc::kill(p.pid() as libc::pid_t, sig);
                }
            }
        }
    }

    /// Stops the control plane now (also done on drop).
    pub fn stop(&self) {
        self.inner.teardown();
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        self.inner.teardown();
    }
}

impl Teardown for Cluster {
    fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let processes = std::mem::take(&mut *process::lock(&self.processes));
        for p in processes.iter().rev() {
            p.stop(Duration::from_secs(5));
        }
        let asked = std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1");
        let failed = self.keep.load(Ordering::SeqCst) || process::failure_seen();
        if asked || failed {
            let _ = std::fs::write(self.work_dir.join(KEEP_MARKER), "");
            // A failure needs the logs, not etcd's 64 MB of preallocated WAL.
            if !asked {
                let _ = std::fs::remove_dir_all(self.work_dir.join("etcd"));
            }
            eprintln!(
                "devcluster: logs and certificates kept in {}",
                self.work_dir.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.work_dir) {
            eprintln!("devcluster: cannot remove {}: {e}", self.work_dir.display());
        }
    }
}

/// Runs `future` to completion on a fresh single-threaded runtime in a scoped thread, so
/// it works whether or not the caller is inside an async runtime.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a single-threaded runtime")
                .block_on(future)
        });
        match worker.join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Polls `ready` every 100 ms until it returns `Ok(true)`, failing early when `process`
/// exits and with the last error on timeout.
pub(crate) async fn wait_for<F>(
    process: &Supervised,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> F,
) -> Result<()>
where
    F: Future<Output = std::result::Result<bool, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match ready().await {
            Ok(true) => return Ok(()),
            Ok(false) => last = "not yet".into(),
            Err(e) => last = e,
        }
        check_alive(process, what)?;
        if Instant::now() > deadline {
            return Err(DevClusterError::Timeout {
                what: what.into(),
                after: timeout,
                last: match process.log() {
                    Some(log) => format!("{last} (see {})", log.display()),
                    None => last,
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn check_alive(process: &Supervised, what: &str) -> Result<()> {
    match process.exited() {
        None => Ok(()),
        Some(status) => {
            let log = process.log().cloned().unwrap_or_default();
            Err(DevClusterError::Exited {
                name: process.name().into(),
                status: status.to_string(),
                what: what.into(),
                tail: tail(&log, 20),
                log: log.display().to_string(),
            })
        }
    }
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `GET /health` over plain HTTP/1.0: etcd serves `{"health":"true",...}` once it has a
/// leader.
fn etcd_healthy(port: u16) -> std::result::Result<bool, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connecting to etcd: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    Ok(response.starts_with("HTTP/1.0 200") && response.contains(r#""health":"true""#))
}

/// Ports nobody listens on right now. All are held until every one is chosen, so they
/// differ; another process may still take one before our child binds it (then
/// [`DevCluster::start`] tries again).
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_error("choosing free ports"))?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener
            .local_addr()
            .map_err(io_error("choosing free ports"))?
            .port();
    }
    Ok(ports)
}

fn make_work_dir(root: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let dir = root.join(format!(
        "{WORK_DIR_PREFIX}{}-{nanos:09}",
        std::process::id()
    ));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io_error(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Removes work directories of processes that no longer run and did not keep them on
/// purpose (a test binary killed by a signal cannot clean up after itself).
fn remove_abandoned_work_dirs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(WORK_DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill(pid, 0) only checks whether the process exists.
        let running = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !running && !entry.path().join(KEEP_MARKER).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The namespace and name of the operator's ServiceAccount in `manifests/rbac.yaml`.
pub const OPERATOR_SERVICE_ACCOUNT: (&str, &str) = ("pgpilot-system", "pgpilot");

/// A kubeconfig with everything embedded, so it stays valid wherever it is copied.
fn write_kubeconfig(path: &Path, server: &str, ca_pem: &str, user: &str) -> Result<()> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: pgpilot-dev
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: pgpilot-dev
  user:
{user}contexts:
- name: pgpilot-dev
  context:
    cluster: pgpilot-dev
    user: pgpilot-dev
current-context: pgpilot-dev
",
        ca = b64(ca_pem),
    );
    std::fs::write(path, text).map_err(io_error(format!("writing {}", path.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(format!("writing {}", path.display())))
}
