//! `kubectl` against the test control plane, returning JSON. Blocking and cheap to clone,
//! so the kubelet's prober thread can share it.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde_json::Value;

#[derive(Clone)]
pub struct Kube {
    pub kubectl: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub cache: PathBuf,
}

impl Kube {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .arg("-n")
            .arg(&self.namespace);
        c
    }

    /// Runs kubectl; `Err(stderr)` when it fails.
    pub fn try_run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        self.try_run_with(args, stdin).map(|(out, _)| out)
    }

    /// Runs kubectl; `(stdout, stderr)`, or `Err(stderr)` when it fails.
    pub fn try_run_full(&self, args: &[&str]) -> Result<(String, String), String> {
        self.try_run_with(args, None)
    }

    /// `kubectl apply` of `yaml`; `(stdout, stderr)` (where the admission warnings are), or
    /// `Err(stderr)`.
    pub fn try_apply(&self, yaml: &str) -> Result<(String, String), String> {
        self.try_run_with(&["apply", "-f", "-"], Some(yaml))
    }

    fn try_run_with(&self, args: &[&str], stdin: Option<&str>) -> Result<(String, String), String> {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running kubectl: {e}"))?;
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(text.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok((
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        } else {
            Err(format!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    pub fn run(&self, args: &[&str]) -> String {
        self.try_run(args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn apply(&self, yaml: &str) -> String {
        self.try_run(&["apply", "-f", "-"], Some(yaml))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// One object, or `None` when it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self
            .try_run(&["get", kind, name, "-o", "json"], None)
            .ok()?;
        serde_json::from_str(&out).ok()
    }

    /// Objects of a kind matching a label selector (`""`: all); none when the API server
    /// does not answer.
    pub fn list(&self, kind: &str, selector: &str) -> Vec<Value> {
        self.try_list(kind, selector).unwrap_or_default()
    }

    /// The same, `None` when the API server does not answer (not the same as no object).
    pub fn try_list(&self, kind: &str, selector: &str) -> Option<Vec<Value>> {
        let mut args = vec!["get", kind, "-o", "json"];
        if !selector.is_empty() {
            args.extend(["-l", selector]);
        }
        let out = self.try_run(&args, None).ok()?;
        let list: Value = serde_json::from_str(&out).ok()?;
        list["items"].as_array().cloned()
    }

    /// A Secret's key, decoded.
    pub fn secret(&self, name: &str, key: &str) -> String {
        let s = self
            .get("secret", name)
            .unwrap_or_else(|| panic!("Secret {name} does not exist"));
        decode(&s["data"][key]).unwrap_or_else(|| panic!("Secret {name} has no key {key}"))
    }

    pub fn patch_status(&self, kind: &str, name: &str, patch: &Value) -> Result<String, String> {
        self.try_run(
            &[
                "patch",
                kind,
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        )
    }
}

/// A base64 value of a Secret's `data`.
pub fn decode(v: &Value) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Polls `f` every 250 ms until it returns `Some`, panicking with `what` after `secs`.
pub fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {secs}s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
