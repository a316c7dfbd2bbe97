//! cert-manager beside pgpilot, as `kubectl apply -k manifests/` installs them: cert-manager's
//! controller and CA injector (v1.21.1, built from the vendored source by
//! `hack/build-certmanager.sh`) run as host processes against a real control plane. The
//! manifests' Issuers and Certificates yield the webhook's serving Secret; the CA injector
//! writes that CA into both webhook configurations; `pgpilot webhook` serves the issued pair
//! from a directory laid out as the Secret's volume, and a client that trusts only the
//! injected bundle verifies it under the Service's DNS name. A renewal asked of cert-manager
//! (as `cmctl renew` asks) is served without a restart, still verified by the same bundle.
//!
//! The operator's pods themselves need a node (the Deployment stays Pending here): the
//! manifests' Service is pointed at the host process that stands in for them (its selector
//! removed, its Endpoints set to the host's address), so the API server calls the webhook
//! through the Service (`--enable-aggregator-routing`: at its endpoints), trusting only the
//! bundle the injector wrote. A client creates and edits clusters without pause while
//! cert-manager renews the serving certificate three times, and the API server, whose
//! connections the webhook ends at a 2-second age, meets each new certificate: not one
//! admission may fail.

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
/// The webhook's `--max-connection-age-seconds` in this suite.
const MAX_AGE: Duration = Duration::from_secs(2);

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
    key_of(cluster, SECRET, key)
}

/// A key of Secret `secret` in the operator's namespace, decoded.
fn key_of(cluster: &DevCluster, secret: &str, key: &str) -> Option<Vec<u8>> {
    let jsonpath = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
    let b64 = kubectl(
        cluster,
        &["get", "secret", secret, "-n", NAMESPACE, "-o", &jsonpath],
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
fn verified(ip: &str, port: u16, bundle: &Path) -> Result<String, String> {
    let url = format!("https://{SERVICE_HOST}:{port}/healthz");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(bundle)
        .args(["--resolve", &format!("{SERVICE_HOST}:{port}:{ip}")])
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
            "openssl s_client -connect {ip}:{port} -servername {SERVICE_HOST} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&served.stdout).trim().to_owned())
}

/// The host's first global IPv4 address: Endpoints refuse loopback addresses, and the API
/// server reaches this one.
fn host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
        .expect("the host has no global IPv4 address for the webhook's Endpoints")
}

/// Asks cert-manager to renew Certificate `certificate` now, as `cmctl renew` does.
fn renew(cluster: &DevCluster, certificate: &str, n: u32) {
    let condition = format!(
        r#"{{"status":{{"conditions":[{{"type":"Issuing","status":"True","reason":"ManuallyTriggered","message":"renewal {n} asked by the install suite","lastTransitionTime":"2026-01-01T00:00:00Z"}}]}}}}"#
    );
    kubectl(
        cluster,
        &[
            "patch",
            "certificate",
            certificate,
            "-n",
            NAMESPACE,
            "--subresource=status",
            "--type=merge",
            "-p",
            &condition,
        ],
    )
    .expect("asking cert-manager to renew");
}

/// Creates and edits clusters in namespace `tenants` through the API server (and so through
/// both webhooks) until `stop`; every request's outcome, and the failures' messages.
fn admissions(
    kubeconfig: PathBuf,
    kubectl_bin: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u32, Vec<String>) {
    let run = |args: &[&str], input: Option<&str>| -> Result<(), String> {
        let mut child = Command::new(&kubectl_bin)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .env("KUBECACHEDIR", kubeconfig.with_file_name("kubectl-cache"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(input) = input {
            use std::io::Write;
            let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    };
    let (mut requests, mut failures) = (0, Vec::new());
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let create = format!(
            "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata:\n  name: load-{n}\n  namespace: tenants\nspec:\n  storage:\n    size: 1Gi\n"
        );
        requests += 1;
        if let Err(e) = run(&["create", "-f", "-"], Some(&create)) {
            failures.push(format!("create load-{n}: {e}"));
        }
        let edit = format!(
            r#"{{"spec":{{"postgresql":{{"parameters":{{"work_mem":"{}MB"}}}}}}}}"#,
            4 + n % 8
        );
        requests += 1;
        if let Err(e) = run(
            &[
                "patch",
                "pgc",
                &format!("load-{n}"),
                "-n",
                "tenants",
                "--type=merge",
                "-p",
                &edit,
            ],
            None,
        ) {
            failures.push(format!("edit load-{n}: {e}"));
        }
    }
    (requests, failures)
}

/// Renews the CA as cert-manager would when it nears its end: a new CA certificate, which
/// must keep the old one's key (`rotationPolicy: Never`), so that the bundle the API server
/// holds and the serving certificate the webhook has keep verifying each other whichever is
/// replaced first. Returns the new CA certificate.
fn renew_the_ca(
    cluster: &DevCluster,
    old_ca: &[u8],
    old_bundle: &Path,
    ip: &str,
    port: u16,
) -> Vec<u8> {
    renew(cluster, "pgpilot-ca", 1);
    let before = serial(old_ca);
    let new_ca = until(
        "the renewed CA in its Secret",
        Duration::from_secs(120),
        || key_of(cluster, "pgpilot-ca", "tls.crt").filter(|c| serial(c) != before),
    );
    assert_eq!(
        public_key(&new_ca),
        public_key(old_ca),
        "the CA's renewal changed its key: the injected bundle no longer verifies new certificates"
    );
    // The certificate served now (issued under the old CA certificate) verifies against
    // the new one.
    let new_bundle = old_bundle.with_file_name("renewed-ca.crt");
    std::fs::write(&new_bundle, &new_ca).expect("bundle file");
    verified(ip, port, &new_bundle).expect("the served certificate against the renewed CA");
    new_ca
}

/// The public key of a PEM certificate, PEM.
fn public_key(pem: &[u8]) -> String {
    x509(pem, "-pubkey")
}

/// `serial=...` of a PEM certificate, as openssl prints it.
fn serial(pem: &[u8]) -> String {
    x509(pem, "-serial")
}

/// What `openssl x509 -noout FIELD` prints for a PEM certificate, trimmed.
fn x509(pem: &[u8], field: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", field])
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
    let ip = host_address();
    let webhook = spawn(
        &cluster,
        "pgpilot-webhook",
        Path::new(env!("CARGO_BIN_EXE_pgpilot")),
        &[
            "webhook",
            "--listen",
            &format!("{ip}:{port}"),
            "--cert-dir",
            &dir.display().to_string(),
            // The API server keeps its connection: ended at 2 s, so that it reconnects to
            // each renewed certificate during the run.
            "--max-connection-age-seconds",
            &MAX_AGE.as_secs().to_string(),
        ],
    );
    let mut serving = serial(&crt);
    let first = until(
        "the webhook verified with the injected CA",
        Duration::from_secs(30),
        || verified(&ip, port, &bundle).ok(),
    );
    assert_eq!(
        first, serving,
        "the webhook served another certificate than the issued one"
    );

    // The Service of the manifests, pointed at this process: no selector, Endpoints by hand.
    kubectl(
        &cluster,
        &[
            "patch",
            "service",
            "pgpilot-webhook",
            "-n",
            NAMESPACE,
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/selector"}]"#,
        ],
    )
    .expect("the Service without its selector");
    let endpoints = format!(
        r#"{{"apiVersion":"v1","kind":"Endpoints","metadata":{{"name":"pgpilot-webhook","namespace":"{NAMESPACE}"}},"subsets":[{{"addresses":[{{"ip":"{ip}"}}],"ports":[{{"name":"https","port":{port},"protocol":"TCP"}}]}}]}}"#
    );
    let file = cluster.work_dir().join("webhook-endpoints.json");
    std::fs::write(&file, endpoints).expect("endpoints file");
    kubectl(&cluster, &["apply", "-f", &file.display().to_string()])
        .expect("the Service's Endpoints");
    kubectl(&cluster, &["create", "namespace", "tenants"]).expect("namespace tenants");
    // The first create through the Service: resolved by the mutating webhook.
    let probe = cluster.work_dir().join("first.yaml");
    std::fs::write(
        &probe,
        "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata:\n  name: first\n  namespace: tenants\nspec:\n  storage:\n    size: 1Gi\n",
    )
    .expect("cluster file");
    let through_service = Instant::now();
    until(
        "a cluster created through the Service",
        Duration::from_secs(60),
        || kubectl(&cluster, &["create", "-f", &probe.display().to_string()]).ok(),
    );
    let image = kubectl(
        &cluster,
        &[
            "get",
            "pgc",
            "first",
            "-n",
            "tenants",
            "-o",
            "jsonpath={.spec.image}",
        ],
    )
    .expect("the stored cluster");
    assert!(
        !image.trim().is_empty(),
        "the stored cluster was not resolved: no spec.image"
    );
    let invalid = kubectl(
        &cluster,
        &[
            "patch",
            "pgc",
            "first",
            "-n",
            "tenants",
            "--type=merge",
            "-p",
            r#"{"spec":{"postgresql":{"parameters":{"work_mem":"lots"}}}}"#,
        ],
    )
    .expect_err("the validating webhook refuses work_mem: lots");
    // The webhook's own message and warnings (the CRD's schema does not know parameters).
    assert!(
        invalid.contains("spec.postgresql.parameters[work_mem]: Invalid value: \"lots\"")
            && invalid.contains("Warning: spec.tls: no TLS"),
        "{invalid}"
    );
    let first_admission = through_service.elapsed();

    // Renewals while a client creates and edits clusters without pause.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let kubeconfig = cluster.kubeconfig().to_path_buf();
        let kubectl_bin = cluster.bin_dir().join("kubectl");
        let stop = stop.clone();
        std::thread::spawn(move || admissions(kubeconfig, kubectl_bin, stop))
    };
    // Three renewals of the serving certificate, then one of the CA and one more of the
    // serving certificate under it.
    let renewals = 4;
    let renewing = Instant::now();
    let mut ca_renewed = None;
    for n in 1..=renewals {
        if n == renewals {
            ca_renewed = Some(renew_the_ca(&cluster, &ca, &bundle, &ip, port));
        }
        renew(&cluster, "pgpilot-webhook", n);
        let renewed = until(
            &format!("renewal {n}: the new certificate in the Secret"),
            Duration::from_secs(120),
            || secret_key(&cluster, "tls.crt").filter(|c| serial(c) != serving),
        );
        let renewed_key = until(
            &format!("renewal {n}: the key matching the new certificate"),
            Duration::from_secs(30),
            || {
                // The Secret is written whole; read both halves from one version.
                let key = secret_key(&cluster, "tls.key")?;
                let crt = secret_key(&cluster, "tls.crt")?;
                (crt == renewed).then_some(key)
            },
        );
        write_cert_dir(&dir, &renewed, &renewed_key, n + 1);
        let after = serial(&renewed);
        until(
            &format!("renewal {n}: the new certificate served"),
            Duration::from_secs(30),
            || {
                // Verified by the bundle injected at the start, also after the CA renewal.
                verified(&ip, port, &bundle)
                    .ok()
                    .filter(|served| *served == after)
            },
        );
        serving = after;
        // Past the webhook's connection age: the API server's calls now come on
        // connections that met the renewed certificate.
        std::thread::sleep(MAX_AGE + Duration::from_secs(2));
    }
    // Whichever CA certificate the injector holds now (it follows the serving Secret's
    // ca.crt, in its own time), both verify what is served.
    let new_ca = ca_renewed.expect("the CA was renewed");
    let now_injected = injected(&cluster, "validatingwebhookconfiguration").expect("a bundle");
    for (what, pem) in [("injected now", &now_injected), ("renewed CA", &new_ca)] {
        let file = bundle.with_file_name("check-ca.crt");
        std::fs::write(&file, pem).expect("bundle file");
        let served = verified(&ip, port, &file)
            .unwrap_or_else(|e| panic!("the served certificate against the {what}: {e}"));
        assert_eq!(served, serving, "{what}");
    }
    std::thread::sleep(MAX_AGE + Duration::from_secs(2));
    let renewing = renewing.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (requests, failures) = load.join().expect("the admission client");
    assert!(
        failures.is_empty(),
        "{} of {requests} admissions failed during the renewals: {failures:#?}",
        failures.len()
    );
    assert!(
        requests >= 10,
        "only {requests} admissions during the renewals: nothing was proven"
    );
    assert!(webhook.exited().is_none(), "the webhook restarted");
    eprintln!(
        "e2e_install: cert-manager issued the webhook's Secret {:.1} s after kubectl apply -k, the CA injected into both webhook configurations by {:.1} s; the API server called the webhook through the Service (a create resolved, an invalid edit refused) {:.1} s after its Endpoints were set; {} serving-certificate renewals and one CA renewal (same key: the bundle injected before it verifies the certificates issued after it, and the reverse) in {:.1} s, each served without a restart and met by the API server on new connections (2 s connection age), while {requests} creates and edits were admitted, 0 failed",
        issued.as_secs_f64(),
        injected_after.as_secs_f64(),
        first_admission.as_secs_f64(),
        renewals - 1,
        renewing.as_secs_f64()
    );
}
