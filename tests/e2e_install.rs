//! cert-manager beside pgpilot, as `kubectl apply -k manifests/` installs them: cert-manager's
//! controller and CA injector (v1.21.1, built from the vendored source by
//! `hack/build-certmanager.sh`) run as host processes against a real control plane. The
//! manifests' Issuers and Certificates yield the webhook's serving Secret; the CA injector
//! writes that CA into both webhook configurations; `pgpilot webhook` serves the issued pair
//! from a directory laid out as the Secret's volume, and a client that trusts only the
//! injected bundle verifies it under the Service's DNS name. A renewal asked of cert-manager
//! (as `cmctl renew` asks) is served without a restart, still verified by the same bundle.
//!
//! The operator's pods themselves need a node (the Deployment stays Pending here), so the API
//! server's own call through the Service is not made in this suite.

mod e2e;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use pgpilot::devcluster::{self, DevCluster, Options, free_ports, process::Supervised};

use e2e::REPO;

const NAMESPACE: &str = "pgpilot-system";
const SECRET: &str = "pgpilot-webhook-tls";
const SERVICE_HOST: &str = "pgpilot-webhook.pgpilot-system.svc";

/// cert-manager's binaries and CRDs: `PGPILOT_CERT_MANAGER` (set by `.ci/run`), else the
/// build script's answer; `None`, said in one line, when its source is absent.
fn cert_manager() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PGPILOT_CERT_MANAGER") {
        return Some(dir.into());
    }
    let out = Command::new("bash")
        .arg(format!("{REPO}/hack/build-certmanager.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running hack/build-certmanager.sh");
    match out.status.code() {
        Some(0) => Some(String::from_utf8_lossy(&out.stdout).trim().into()),
        // The script said why in one line (no source): nothing to run against.
        Some(3) => None,
        _ => panic!("hack/build-certmanager.sh failed: {}", out.status),
    }
}

fn kubectl(cluster: &DevCluster, args: &[&str]) -> Result<String, String> {
    let out = cluster
        .kubectl()
        .args(args)
        .current_dir(REPO)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn until<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn spawn(
    cluster: &DevCluster,
    name: &str,
    program: &Path,
    args: &[&str],
) -> std::sync::Arc<Supervised> {
    let log = cluster.work_dir().join(format!("{name}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let mut command = Command::new(program);
    command
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
    Supervised::spawn(name, command, Some(log)).unwrap_or_else(|e| panic!("starting {name}: {e}"))
}

/// A key of the issued Secret, decoded.
fn secret_key(cluster: &DevCluster, key: &str) -> Option<Vec<u8>> {
    let jsonpath = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
    let b64 = kubectl(
        cluster,
        &["get", "secret", SECRET, "-n", NAMESPACE, "-o", &jsonpath],
    )
    .ok()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

/// The `caBundle` cert-manager's CA injector wrote into webhook configuration `kind`.
fn injected(cluster: &DevCluster, kind: &str) -> Option<Vec<u8>> {
    let b64 = kubectl(
        cluster,
        &[
            "get",
            kind,
            "pgpilot",
            "-o",
            "jsonpath={.webhooks[0].clientConfig.caBundle}",
        ],
    )
    .ok()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

/// The serving pair as kubelet lays out a Secret volume: files behind a `..data` symlink,
/// swapped in one rename.
fn write_cert_dir(dir: &Path, crt: &[u8], key: &[u8], generation: u32) {
    let data = dir.join(format!("..{generation}"));
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(data.join("tls.crt"), crt).expect("tls.crt");
    std::fs::write(data.join("tls.key"), key).expect("tls.key");
    let link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(format!("..{generation}"), &link).expect("symlink");
    std::fs::rename(&link, dir.join("..data")).expect("swapping ..data");
    for name in ["tls.crt", "tls.key"] {
        let file = dir.join(name);
        if std::fs::symlink_metadata(&file).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &file).expect("symlink");
        }
    }
}

/// `GET /healthz` on the webhook at `port` as a client that trusts only `bundle` and checks
/// the Service's name (curl), then the serial of the certificate served (openssl).
fn verified(port: u16, bundle: &Path) -> Result<String, String> {
    let url = format!("https://{SERVICE_HOST}:{port}/healthz");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(bundle)
        .args(["--resolve", &format!("{SERVICE_HOST}:{port}:127.0.0.1")])
        .arg(&url)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    if String::from_utf8_lossy(&out.stdout).trim() != "ok" {
        return Err("an unexpected answer".into());
    }
    let served = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {SERVICE_HOST} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&served.stdout).trim().to_owned())
}

/// `serial=...` of a PEM certificate, as openssl prints it.
fn serial(pem: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(pem).unwrap();
    let out = child.wait_with_output().expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn cert_manager_issues_and_renews_the_webhook_certificate_and_injects_its_ca() {
    let Some(cm) = cert_manager() else {
        return;
    };
    let bin_dir = devcluster::bin_dir(Path::new(REPO)).expect("control-plane binaries");
    let cluster = DevCluster::start(&Options::new(bin_dir)).expect("control plane starts");
    let crds = cm.join("crds");
    kubectl(
        &cluster,
        &["apply", "--server-side", "-f", &crds.display().to_string()],
    )
    .expect("cert-manager's CRDs");
    // Both default to metrics on 0.0.0.0:9402: a free loopback port each.
    let [controller_metrics, injector_metrics] = free_ports().expect("free ports");
    let kubeconfig = cluster.kubeconfig().display().to_string();
    let controller = spawn(
        &cluster,
        "cert-manager-controller",
        &cm.join("bin/cert-manager-controller"),
        &[
            "--kubeconfig",
            &kubeconfig,
            "--leader-elect=false",
            &format!("--metrics-listen-address=127.0.0.1:{controller_metrics}"),
        ],
    );
    let injector = spawn(
        &cluster,
        "cert-manager-cainjector",
        &cm.join("bin/cert-manager-cainjector"),
        &[
            "--kubeconfig",
            &kubeconfig,
            "--leader-elect=false",
            &format!("--metrics-listen-address=127.0.0.1:{injector_metrics}"),
        ],
    );

    // The whole install, as users apply it (cert-manager's CRDs are there now).
    let started = Instant::now();
    until(
        "kubectl apply -k manifests/",
        Duration::from_secs(60),
        || kubectl(&cluster, &["apply", "--server-side", "-k", "manifests/"]).ok(),
    );
    let crt = until(
        "the webhook's Secret issued",
        Duration::from_secs(120),
        || secret_key(&cluster, "tls.crt"),
    );
    let ca = secret_key(&cluster, "ca.crt").expect("ca.crt in the Secret");
    let key = secret_key(&cluster, "tls.key").expect("tls.key in the Secret");
    let issued = started.elapsed();
    for kind in [
        "mutatingwebhookconfiguration",
        "validatingwebhookconfiguration",
    ] {
        let bundle = until(
            &format!("the CA injected into the {kind}"),
            Duration::from_secs(60),
            || injected(&cluster, kind),
        );
        assert_eq!(bundle, ca, "the {kind}'s caBundle is not the Secret's CA");
    }
    let injected_after = started.elapsed();
    assert!(controller.exited().is_none() && injector.exited().is_none());

    // pgpilot serves the issued pair; the injected bundle verifies it by the Service's name.
    let dir = cluster.work_dir().join("webhook-from-cert-manager");
    std::fs::create_dir_all(&dir).expect("cert dir");
    write_cert_dir(&dir, &crt, &key, 1);
    let bundle = cluster.work_dir().join("injected-ca.crt");
    std::fs::write(
        &bundle,
        injected(&cluster, "validatingwebhookconfiguration").unwrap(),
    )
    .expect("bundle file");
    let [port] = free_ports().expect("a free port");
    let webhook = spawn(
        &cluster,
        "pgpilot-webhook",
        Path::new(env!("CARGO_BIN_EXE_pgpilot")),
        &[
            "webhook",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--cert-dir",
            &dir.display().to_string(),
        ],
    );
    let before = serial(&crt);
    let first = until(
        "the webhook verified with the injected CA",
        Duration::from_secs(30),
        || verified(port, &bundle).ok(),
    );
    assert_eq!(
        first, before,
        "the webhook served another certificate than the issued one"
    );

    // A renewal asked of cert-manager: a new key and certificate under the same CA.
    let condition = r#"{"status":{"conditions":[{"type":"Issuing","status":"True","reason":"ManuallyTriggered","message":"renewal asked by the install suite","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    kubectl(
        &cluster,
        &[
            "patch",
            "certificate",
            "pgpilot-webhook",
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            condition,
        ],
    )
    .expect("asking cert-manager to renew");
    let renewed = until(
        "the renewed certificate in the Secret",
        Duration::from_secs(120),
        || secret_key(&cluster, "tls.crt").filter(|c| serial(c) != before),
    );
    let renewed_key = secret_key(&cluster, "tls.key").expect("the renewed key");
    assert_eq!(
        secret_key(&cluster, "ca.crt").as_deref(),
        Some(&ca[..]),
        "the CA changed"
    );
    write_cert_dir(&dir, &renewed, &renewed_key, 2);
    let after = serial(&renewed);
    until(
        "the renewed certificate served",
        Duration::from_secs(30),
        || {
            verified(port, &bundle)
                .ok()
                .filter(|served| *served == after)
        },
    );
    assert!(webhook.exited().is_none(), "the webhook restarted");
    eprintln!(
        "e2e_install: cert-manager issued the webhook's Secret {:.1} s after kubectl apply -k, the CA injected into both webhook configurations by {:.1} s; one renewal served without a restart, verified by the injected bundle",
        issued.as_secs_f64(),
        injected_after.as_secs_f64()
    );
}
