//! A second, one-instance cluster with `tls.secretName`, for two day-2 edits of files on a
//! running pod: its certificate renewed in the Secret, as cert-manager renews one (a new
//! `sslmode=verify-full` connection then meets the new certificate, and PostgreSQL's start
//! time is unchanged), and a backup repository added (archiving starts, a backup from the
//! new CronJob succeeds).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;

use super::Harness;
use super::kube::wait_for;
use super::sql::Conn;

const CLUSTER: &str = "tls1";
const SECRET: &str = "tls1-server-tls";

/// A CA, and the server certificates it signs.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Authority {
    pub fn new() -> Authority {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "dataplane test CA");
        let cert = params.self_signed(&key).expect("CA certificate");
        Authority {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for the DNS names `names`.
    pub fn server(&self, names: Vec<String>, serial: u64) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let mut params = CertificateParams::new(names).expect("server params");
        params.serial_number = Some(serial.into());
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

impl Harness {
    fn apply_tls_secret(&self, ca: &Authority, serial: u64) -> String {
        // The cluster's primary Service and pods.
        let names = vec![
            format!("{CLUSTER}-primary.dataplane.svc"),
            format!("{CLUSTER}-primary"),
            format!("*.{CLUSTER}-pods.dataplane.svc"),
        ];
        self.apply_tls_secret_for(ca, serial, names)
    }

    fn apply_tls_secret_for(&self, ca: &Authority, serial: u64, names: Vec<String>) -> String {
        let (cert, key) = ca.server(names, serial);
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        self.kube.apply(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {SECRET}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n  ca.crt: {}\n",
            b64(&cert),
            b64(&key),
            b64(&ca.pem)
        ));
        fingerprint_of_pem(&cert)
    }

    /// The SHA-256 fingerprint of the certificate the server at `ip` presents, as
    /// `openssl s_client -starttls postgres` sees it.
    fn served_fingerprint(&self, ip: &str) -> Option<String> {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -starttls postgres -connect {ip}:5432 </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
            ))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    pub fn certificate_renewal(&mut self, figures: &mut Vec<String>) {
        let ca = Authority::new();
        let ca_file = self.root.join("tls1-ca.crt");
        std::fs::write(&ca_file, &ca.pem).expect("CA file");
        let first = self.apply_tls_secret(&ca, 1);
        self.kube.apply(&format!(
            "apiVersion: pgpilot.io/v1\nkind: PostgresCluster\nmetadata:\n  name: {CLUSTER}\nspec:\n  postgresVersion: 15\n  instances: 1\n  storage:\n    size: 1Gi\n  resources:\n    requests:\n      cpu: 100m\n      memory: 256Mi\n  tls:\n    secretName: {SECRET}\n"
        ));
        let pod = format!("{CLUSTER}-0");
        wait_for(&format!("pod {pod}"), 60, || self.kube.get("pod", &pod));
        let ip = self.take_ip();
        self.kubelet.start_pod(&pod, &ip);
        wait_for(&format!("{pod} leading"), 180, || {
            self.leader(&[pod.as_str()])
        });
        let password = self
            .kube
            .secret(&format!("{CLUSTER}-superuser"), "password");
        let conn = Conn::new(
            &format!("{CLUSTER}-primary.dataplane.svc"),
            "postgres",
            &password,
            "postgres",
        );
        let query = |sql: &str| verify_full(&conn, &ca_file, sql);
        wait_for("a verify-full connection", 120, || query("SELECT 1").ok());
        // The roles Job checks the primary's certificate too (verify-full against the
        // Secret's ca.crt): it succeeds against the certificate issued for the Service.
        let roles = wait_for("the roles Job's pod", 60, || {
            self.kube
                .list(
                    "pods",
                    &format!("pgpilot.io/cluster={CLUSTER},app.kubernetes.io/component=roles"),
                )
                .first()
                .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        });
        let roles_ip = self.take_ip();
        let (ok, log) = self.kubelet.run_to_completion(&roles, &roles_ip);
        assert!(ok, "the roles Job over verify-full:\n{log}");
        self.patroni_serves_only_https(&ca_file, &pod, &ip);
        assert_eq!(
            self.served_fingerprint(&ip).as_deref(),
            Some(first.as_str())
        );
        let started = query("SELECT pg_postmaster_start_time()").expect("start time");

        // Renewed in place, as cert-manager does: same Secret, new key and certificate.
        let t = Instant::now();
        let second = self.apply_tls_secret(&ca, 2);
        assert_ne!(first, second);
        wait_for("the renewed certificate served", 180, || {
            (self.served_fingerprint(&ip).as_deref() == Some(second.as_str())).then_some(())
        });
        let took = t.elapsed();
        let now = query("SELECT pg_postmaster_start_time()")
            .unwrap_or_else(|e| panic!("verify-full with the renewed certificate: {e}"));
        assert_eq!(now, started, "PostgreSQL restarted for a certificate");
        assert!(
            self.occurrences(Some(CLUSTER), Some("CertificateReload")) > 0,
            "no CertificateReload event"
        );
        figures.push(format!(
            "renewed server certificate (Secret replaced in place) served to a new verify-full connection {:.1} s later, PostgreSQL not restarted (the kubelet here refreshes volumes every 10 s, the operator resyncs every 5 s)",
            took.as_secs_f64()
        ));

        // A certificate for the Service only: Patroni's members could not check each other
        // by their pod names. Reported, and not reloaded into the running servers.
        let t = Instant::now();
        let service_only = vec![format!("{CLUSTER}-primary.dataplane.svc")];
        self.apply_tls_secret_for(&ca, 3, service_only);
        let message = wait_for("ConfigApplied=False, CertificateRefused", 120, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            let (status, reason, _) = self.condition(&pgc, "ConfigApplied")?;
            (status == "False" && reason == "CertificateRefused").then(|| {
                pgc["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "ConfigApplied")
                    .map(|c| c["message"].to_string())
                    .unwrap_or_default()
            })
        });
        let refused_after = t.elapsed();
        assert!(
            message.contains(&format!("{CLUSTER}-0.{CLUSTER}-pods.dataplane.svc")),
            "{message}"
        );
        // Three more resyncs, past the kubelet's refresh: nobody asked for a reload, so the
        // servers keep the accepted one.
        self.wait_for_resyncs(3);
        assert_eq!(
            self.served_fingerprint(&ip).as_deref(),
            Some(second.as_str()),
            "the operator asked for a reload of a refused certificate"
        );
        let fixed = self.apply_tls_secret(&ca, 4);
        // The operator asks for a reload as soon as the Secret changes, and the kubelet may
        // not have replaced the files yet: PostgreSQL and Patroni's API may then load the
        // refused certificate. Patroni stays reachable under the primary Service's name,
        // and the next reload loads the corrected one.
        wait_for("the corrected certificate served", 180, || {
            (self.served_fingerprint(&ip).as_deref() == Some(fixed.as_str())).then_some(())
        });
        wait_for("ConfigApplied=True after the correction", 120, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            let (status, _, _) = self.condition(&pgc, "ConfigApplied")?;
            (status == "True").then_some(())
        });
        figures.push(format!(
            "a server certificate without the pods' names: ConfigApplied=False (CertificateRefused, naming {CLUSTER}-0's name) {:.1} s after the Secret changed, no reload asked for; the corrected one served and ConfigApplied=True afterwards",
            refused_after.as_secs_f64()
        ));

        // A backup repository added to the running cluster: the instance pod is replaced
        // with pgBackRest's sidecar and configuration, archiving starts, a backup succeeds.
        let t = Instant::now();
        let uid = self.kube.get("pod", &pod).expect("the pod")["metadata"]["uid"].clone();
        self.edit_cluster(
            CLUSTER,
            json!({ "spec": { "backup": { "pgbackrest": { "repos": [
                { "name": "repo1", "volume": { "size": "1Gi" }, "schedules": { "full": "0 1 * * 0" } }
            ] } } } }),
        );
        let repo_host = format!("{CLUSTER}-repo-host-0");
        wait_for(&format!("pod {repo_host}"), 60, || {
            self.kube.get("pod", &repo_host)
        });
        let repo_ip = self.take_ip();
        self.kubelet.start_pod(&repo_host, &repo_ip);
        wait_for(
            &format!("{pod} replaced with the repository's sidecar"),
            180,
            || {
                let p = self.kube.get("pod", &pod)?;
                let sidecar = p["spec"]["containers"]
                    .as_array()?
                    .iter()
                    .any(|c| c["name"] == "pgbackrest");
                (p["metadata"]["uid"] != uid && sidecar).then_some(())
            },
        );
        wait_for("WAL archived to the new repository", 240, || {
            let archived = query(
                "SELECT pg_switch_wal() IS NOT NULL AND archived_count > 0 FROM pg_stat_archiver",
            )
            .ok()?;
            (archived == "t").then_some(())
        });
        let archiving = t.elapsed();
        let backup = self.backup(&format!("{CLUSTER}-backup-repo1-full"), "tls1-first-full");
        figures.push(format!(
            "backup repository added to a running cluster: pod replaced, archive_mode on, first WAL archived {:.1} s after kubectl patch; a full backup from its CronJob in {:.1} s",
            archiving.as_secs_f64(),
            backup.as_secs_f64()
        ));
        self.switchover_over_tls(figures);
        self.delete_cluster(CLUSTER);
    }

    /// Patroni's REST API of a TLS cluster answers over HTTPS with the cluster's
    /// certificate, which carries the pod's DNS name, and not over plain HTTP.
    fn patroni_serves_only_https(&self, ca_file: &Path, pod: &str, ip: &str) {
        let host = format!("{pod}.{CLUSTER}-pods.dataplane.svc");
        let get = |url: &str, extra: &[&str]| {
            Command::new("curl")
                .args(["-sf", "--max-time", "5"])
                .args(extra)
                .arg(url)
                .output()
                .expect("curl")
        };
        let resolve = format!("{host}:8008:{ip}");
        let ca = ca_file.display().to_string();
        let url = format!("https://{host}:8008/patroni");
        let verified = get(&url, &["--cacert", &ca, "--resolve", &resolve]);
        assert!(
            verified.status.success(),
            "GET /patroni over verified HTTPS: {}",
            String::from_utf8_lossy(&verified.stderr)
        );
        let state: serde_json::Value = serde_json::from_slice(&verified.stdout).expect("JSON");
        assert_eq!(state["role"], "primary", "{state}");
        let plain = get(&format!("http://{ip}:8008/patroni"), &[]);
        assert!(!plain.status.success(), "Patroni answered plain HTTP");
        let stranger = self.root.join("stranger-ca.crt");
        std::fs::write(&stranger, Authority::new().pem).expect("CA file");
        let other = get(
            &url,
            &[
                "--cacert",
                &stranger.display().to_string(),
                "--resolve",
                &resolve,
            ],
        );
        assert!(
            !other.status.success(),
            "Patroni's certificate verified against another CA"
        );
    }

    /// A second member, then a switchover to it: the leader checks the candidate over
    /// HTTPS (its certificate against the cluster's CA, by the name the candidate
    /// publishes), and the operator sends the request over HTTPS.
    fn switchover_over_tls(&mut self, figures: &mut Vec<String>) {
        let first = format!("{CLUSTER}-0");
        let second = format!("{CLUSTER}-1");
        self.edit_cluster(CLUSTER, json!({ "spec": { "instances": 2 } }));
        wait_for(&format!("pod {second}"), 60, || {
            self.kube.get("pod", &second)
        });
        let ip = self.take_ip();
        self.kubelet.start_pod(&second, &ip);
        wait_for(&format!("{second} streaming"), 240, || {
            let s = self.patroni_state(&second)?;
            (s["role"] == "replica" && s["replication_state"] == "streaming").then_some(())
        });
        // Each member publishes its DNS name as its API address.
        let annotation = self.kube.get("pod", &second).expect("the pod")["metadata"]["annotations"]
            ["status"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default();
        let published: serde_json::Value = serde_json::from_str(&annotation).expect("status");
        assert_eq!(
            published["api_url"],
            format!("https://{second}.{CLUSTER}-pods.dataplane.svc:8008/patroni"),
            "{published}"
        );
        // Admission checks the target against status.members.
        wait_for(&format!("{second} running in status.members"), 60, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            pgc["status"]["members"]
                .as_array()?
                .iter()
                .any(|m| m["name"] == second.as_str() && m["state"] == "running")
                .then_some(())
        });
        let t = Instant::now();
        self.kube
            .try_run_full(&[
                "annotate",
                "postgrescluster",
                CLUSTER,
                &format!("pgpilot.io/switchover={second}"),
            ])
            .unwrap_or_else(|e| panic!("switchover to {second}: {e}"));
        let last = wait_for("the switchover recorded", 120, || {
            let last =
                self.kube.get("postgrescluster", CLUSTER)?["status"]["lastSwitchover"].clone();
            (last["outcome"] == "Succeeded" || last["outcome"] == "Failed").then_some(last)
        });
        assert_eq!(last["outcome"], "Succeeded", "{last}");
        assert_eq!(last["from"], first.as_str(), "{last}");
        assert_eq!(last["to"], second.as_str(), "{last}");
        wait_for(&format!("{second} leading"), 60, || {
            self.leader(&[second.as_str()])
        });
        figures.push(format!(
            "TLS cluster: Patroni's REST API over HTTPS only (verified against the cluster CA by the pod's DNS name, refused in clear and against another CA); switchover to the second member, checked by the leader and sent by the operator over HTTPS, {:.1} s from the annotation",
            t.elapsed().as_secs_f64()
        ));
    }
}

/// `sql` over `sslmode=verify-full` against the test CA.
fn verify_full(conn: &Conn, ca_file: &Path, sql: &str) -> Result<String, String> {
    let out = conn
        .command("psql")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", ca_file)
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// `openssl x509 -fingerprint -sha256` of a PEM certificate.
fn fingerprint_of_pem(pem: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pem.as_bytes())
        .expect("writing to openssl");
    let out = child.wait_with_output().expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
