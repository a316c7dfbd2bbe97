//! The operator (`pgpilot run`) as a host process next to the control plane.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::process::{self, Supervised};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{DevClusterError, Result, block_on, check_alive, io_error, kube_error, wait_for};

/// How to run `pgpilot run`.
#[derive(Clone, Debug)]
pub struct OperatorOptions {
    /// The `pgpilot` binary.
    pub program: PathBuf,
    pub kubeconfig: PathBuf,
    /// `tls.crt` and `tls.key` for the webhook.
    pub cert_dir: PathBuf,
    pub listen: SocketAddr,
    /// Output appended to this file; `None`: to our own standard output and error.
    pub log: Option<PathBuf>,
    /// More arguments for `pgpilot run` (`--config FILE`, ...).
    pub extra_args: Vec<String>,
}

/// A running operator; stopped on drop. It can be stopped and started again on the same
/// address (the webhook configurations point there).
pub struct Operator {
    options: OperatorOptions,
    process: Mutex<Option<Arc<Supervised>>>,
}

impl Operator {
    /// The series of the operator's successful reconciles.
    pub const RECONCILED: &'static str = "pgpilot_controller_reconciles_total{result=\"ok\"}";

    /// Starts the operator and waits until its webhook port accepts connections.
    pub fn start(options: OperatorOptions) -> Result<Operator> {
        let operator = Operator {
            options,
            process: Mutex::new(None),
        };
        operator.start_again()?;
        Ok(operator)
    }

    /// Starts the operator after [`Operator::stop`] (a no-op when it runs).
    pub fn start_again(&self) -> Result<()> {
        let mut slot = process::lock(&self.process);
        if slot.as_ref().is_some_and(|p| p.exited().is_none()) {
            return Ok(());
        }
        let o = &self.options;
        let mut command = Command::new(&o.program);
        command
            .arg("run")
            .arg("--kubeconfig")
            .arg(&o.kubeconfig)
            .arg("--cert-dir")
            .arg(&o.cert_dir)
            .arg("--listen")
            .arg(o.listen.to_string())
            .args(&o.extra_args)
            .stdin(Stdio::null());
        if let Some(log) = &o.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(io_error(format!("opening {}", log.display())))?;
            let stderr = file
                .try_clone()
                .map_err(io_error(format!("opening {}", log.display())))?;
            command.stdout(file).stderr(stderr);
        }
        let process = Supervised::spawn("pgpilot run", command, o.log.clone())
            .map_err(io_error(format!("starting {}", o.program.display())))?;
        let listen = o.listen;
        block_on(wait_for(
            &process,
            "waiting for the operator to listen",
            Duration::from_secs(30),
            move || async move {
                Ok(TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_ok())
            },
        ))?;
        *slot = Some(process);
        Ok(())
    }

    /// Stops the operator (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&self) {
        if let Some(p) = process::lock(&self.process).take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// Kills the operator with SIGKILL: no graceful shutdown, its Lease is left to expire.
    pub fn kill(&self) {
        if let Some(p) = process::lock(&self.process).take() {
            p.kill();
        }
    }

    /// An error when the operator has exited.
    pub fn check_alive(&self) -> Result<()> {
        match process::lock(&self.process).as_ref() {
            Some(p) => check_alive(p, "running"),
            None => Ok(()),
        }
    }

    /// The value of one series of the operator's `/metrics` (for example
    /// `pgpilot_controller_reconciles_total{result="ok"}`), fetched over HTTPS and verified
    /// against the `ca.crt` next to the serving certificate.
    pub fn metric(&self, series: &str) -> Result<u64> {
        block_on(async { self.read_metric(&self.metrics_client()?, series).await })
    }

    /// Waits until at least `floor` has passed *and* the operator has finished `more`
    /// successful reconciles beyond those it had counted on entry (its
    /// `pgpilot_controller_reconciles_total{result="ok"}`): a check that nothing changed
    /// then follows real resyncs, however slow the machine. Answers that fail meanwhile (an
    /// operator just restarted) are retried until `timeout`.
    pub fn wait_for_reconciles(&self, more: u64, floor: Duration, timeout: Duration) -> Result<()> {
        let start = std::time::Instant::now();
        block_on(async {
            let client = self.metrics_client()?;
            let mut target = None;
            loop {
                let last = match self.read_metric(&client, Self::RECONCILED).await {
                    Ok(n) => {
                        let target = *target.get_or_insert(n + more);
                        if n >= target && start.elapsed() >= floor {
                            return Ok(());
                        }
                        format!("{n} of {target} reconciles")
                    }
                    Err(e) => e.to_string(),
                };
                if start.elapsed() > timeout {
                    return Err(DevClusterError::Timeout {
                        what: format!("waiting for {more} more reconciles"),
                        after: timeout,
                        last,
                    });
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// A client of the operator's HTTPS port that trusts the `ca.crt` beside its
    /// certificate.
    fn metrics_client(&self) -> Result<kube::Client> {
        let what = format!("a client for {}", self.base_url());
        let ca_path = self.options.cert_dir.join("ca.crt");
        let ca =
            std::fs::read(&ca_path).map_err(io_error(format!("reading {}", ca_path.display())))?;
        let ca = CertificateDer::from_pem_slice(&ca)
            .map_err(|e| DevClusterError::Manifest(format!("{}: {e}", ca_path.display())))?;
        let url = self
            .base_url()
            .parse()
            .map_err(|e| DevClusterError::Manifest(format!("{what}: {e}")))?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(vec![ca.to_vec()]);
        kube::Client::try_from(config).map_err(kube_error(what))
    }

    async fn read_metric(&self, client: &kube::Client, series: &str) -> Result<u64> {
        let what = format!("reading {series} from {}/metrics", self.base_url());
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .map_err(|e| DevClusterError::Manifest(format!("{what}: {e}")))?;
        let text = client
            .request_text(request)
            .await
            .map_err(kube_error(what.clone()))?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .ok_or_else(|| DevClusterError::Manifest(format!("{what}: no such series")))
    }

    /// `https://ADDR`: where the webhook configurations must point.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.options.listen)
    }

    pub fn options(&self) -> &OperatorOptions {
        &self.options
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}
