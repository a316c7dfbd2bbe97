//! The operator (`pgpilot run`) as a host process next to the control plane.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::process::{self, Supervised};
use super::{Result, block_on, check_alive, io_error, wait_for};

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
