//! A cluster restored from an object store after its source was deleted: the source
//! archives and backs up to an S3 bucket, is deleted, and a new cluster describes the
//! source's repository inline (`bootstrap.restore.repository.s3`) and recovers every
//! archived row from it.
//!
//! The object store is moto's S3 server (PyPI, installed by `hack/dataplane/install.sh`)
//! on the node's loopback, behind socat's TLS listener on a pod-network address with a
//! certificate of a test CA, named `s3.pgpilot.test`: a private S3-compatible store as
//! users run MinIO, reached path-style, on a port of its own, its certificate checked
//! against the CA from the repository's `caSecret`. socat terminates TLS because the
//! Python server closes its connections without TLS's close_notify, which pgBackRest
//! rightly reports as a truncated response.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::certificates::Authority;
use super::kube::wait_for;
use super::sql::Conn;
use super::{Harness, NAMESPACE};

pub const MOTO: &str = "/opt/pgpilot-s3/bin/moto_server";
const HOST: &str = "s3.pgpilot.test";
const PORT: u16 = 9443;
const BUCKET: &str = "pgpilot-backups";
const SOURCE: &str = "dps3";
const COPY: &str = "dps3copy";

/// The running store; stopped when dropped.
struct ObjectStore {
    moto: Child,
    tls: Child,
    /// moto's plain-HTTP port on 127.0.0.1, for the test's own reads.
    port: u16,
    ca: String,
}

impl ObjectStore {
    /// Starts the store at `ip`:[`PORT`] with bucket [`BUCKET`].
    fn start(root: &Path, ip: &str) -> ObjectStore {
        let dir = root.join("objectstore");
        std::fs::create_dir_all(&dir).expect("the object store's directory");
        let ca = Authority::new();
        let (cert, key) = ca.server(vec![HOST.to_owned()], 1);
        std::fs::write(dir.join("tls.crt"), cert).expect("the store's certificate");
        std::fs::write(dir.join("tls.key"), key).expect("the store's key");
        let [port] = pgpilot::devcluster::free_ports().expect("a free port");
        let log =
            |name: &str| std::fs::File::create(root.join("logs").join(name)).expect("a log file");
        let moto = Command::new(MOTO)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // Path-style only: otherwise moto takes `s3` in the host name for a bucket.
            .env("S3_IGNORE_SUBDOMAIN_BUCKETNAME", "true")
            .stdin(Stdio::null())
            .stdout(log("moto.log"))
            .stderr(log("moto.log"))
            .spawn()
            .expect("starting moto_server");
        let tls = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{PORT},bind={ip},reuseaddr,fork,verify=0,cert={},key={}",
                dir.join("tls.crt").display(),
                dir.join("tls.key").display()
            ))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log("socat.log"))
            .stderr(log("socat.log"))
            .spawn()
            .expect("starting socat");
        let store = ObjectStore {
            moto,
            tls,
            port,
            ca: ca.pem,
        };
        wait_for("moto's S3 server answering", 60, || {
            store.http("PUT", &format!("/{BUCKET}")).ok()
        });
        store
    }

    /// One plain-HTTP request straight to moto; the body of a 2xx answer.
    fn http(&self, method: &str, target: &str) -> Result<String, String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        match head.split(' ').nth(1) {
            Some(code) if code.starts_with('2') => Ok(body.to_owned()),
            _ => Err(head.lines().next().unwrap_or_default().to_owned()),
        }
    }

    /// The backup labels of stanza `db` in `cluster`'s repository `repo1` in the bucket.
    fn backup_labels(&self, cluster: &str) -> Vec<String> {
        let prefix = format!("pgbackrest/{NAMESPACE}/{cluster}/repo1/backup/db/");
        let mut labels = Vec::new();
        let mut after = String::new();
        loop {
            let body = self
                .http(
                    "GET",
                    &format!("/{BUCKET}?list-type=2&prefix={prefix}&start-after={after}"),
                )
                .expect("listing the bucket");
            let keys: Vec<&str> = body
                .split("<Key>")
                .skip(1)
                .filter_map(|k| k.split_once("</Key>").map(|(k, _)| k))
                .collect();
            for key in &keys {
                let label = key[prefix.len()..].split('/').next().unwrap_or_default();
                if label.ends_with(['F', 'D', 'I']) && !labels.iter().any(|l| l == label) {
                    labels.push(label.to_owned());
                }
            }
            match (body.contains("<IsTruncated>true"), keys.last()) {
                (true, Some(last)) => after = (*last).to_owned(),
                _ => break,
            }
        }
        labels.sort();
        labels
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        for child in [&mut self.tls, &mut self.moto] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A one-instance cluster `name` whose repository `repo1` is the store's bucket; `extra`
/// is merged into its spec.
fn cluster(name: &str, s3: &Value, extra: Value) -> Value {
    let mut c = json!({
        "apiVersion": "pgpilot.io/v1",
        "kind": "PostgresCluster",
        "metadata": { "name": name },
        "spec": {
            "postgresVersion": 15,
            "instances": 1,
            "storage": { "size": "1Gi" },
            "resources": { "requests": { "cpu": "100m", "memory": "256Mi" }, "limits": { "memory": "256Mi" } },
            "backup": { "pgbackrest": { "repos": [
                { "name": "repo1", "s3": s3, "schedules": { "full": "0 1 * * 0" } }
            ] } }
        }
    });
    if let (Some(spec), Some(extra)) = (c["spec"].as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    c
}

impl Harness {
    /// Starts the pods of one-instance cluster `name` (its repository host first) and
    /// waits for its instance to lead; a superuser connection to it.
    fn start_single(&mut self, name: &str) -> Conn {
        let (host, first) = (format!("{name}-repo-host-0"), format!("{name}-0"));
        for pod in [&host, &first] {
            wait_for(&format!("pod {pod}"), 120, || self.kube.get("pod", pod));
            let ip = self.take_ip();
            self.kubelet.start_pod(pod, &ip);
        }
        wait_for(&format!("{first} leading"), 180, || {
            self.leader(&[first.as_str()])
        });
        // Backups are admitted once the status names the primary.
        wait_for(&format!("{name}'s status.primary"), 60, || {
            let c = self.kube.get("postgrescluster", name)?;
            (c["status"]["primary"] == first.as_str()).then_some(())
        });
        let password = self.kube.secret(&format!("{name}-superuser"), "password");
        Conn::new(&self.kubelet.ip(&first), "postgres", &password, "postgres")
    }

    /// Asks cluster `name` for a backup with `pgpilot.io/backup=value` and runs its Job.
    fn backup_of(&mut self, name: &str, value: &str) {
        self.kube.run(&[
            "annotate",
            "postgrescluster",
            name,
            &format!("pgpilot.io/backup={value}"),
        ]);
        let job = wait_for(&format!("{name}'s backup Job"), 60, || {
            let c = self.kube.get("postgrescluster", name)?;
            let r = &c["status"]["lastBackup"];
            (r["request"] == value && r["phase"] == "Running")
                .then(|| r["job"].as_str().map(str::to_owned))?
        });
        let (ok, log) = self.run_job_pod(&job);
        assert!(ok, "{name}'s backup {value}:\n{log}");
    }

    /// The timeline Patroni reports for `pod`.
    fn timeline(&self, pod: &str) -> i64 {
        self.patroni_state(pod).expect("Patroni's state")["timeline"]
            .as_i64()
            .expect("a timeline")
    }

    pub fn delete_cluster(&self, name: &str) {
        self.kube
            .run(&["delete", "postgrescluster", name, "--wait=false"]);
        wait_for(&format!("{name} and its pods gone"), 180, || {
            (self.kube.get("postgrescluster", name).is_none()
                && self
                    .kube
                    .list("pods", &format!("pgpilot.io/cluster={name}"))
                    .is_empty())
            .then_some(())
        });
    }

    /// A source archiving and backing up to the bucket, deleted; a new cluster from the
    /// source's repository described inline recovers every archived row, on a new
    /// timeline, and backs itself up under its own path, beside the source's backups.
    pub fn clone_from_object_store(&mut self, figures: &mut Vec<String>) {
        let ip = self.take_ip();
        let store = ObjectStore::start(&self.root, &ip);
        self.kubelet.add_external_host(HOST, &ip);
        self.kube.apply(
            &json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s3-keys" },
                "stringData": { "key": "pgpilot-test-key", "keySecret": "pgpilot-test-secret" }
            })
            .to_string(),
        );
        self.kube.apply(
            &json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "s3-ca" },
                "stringData": { "ca.crt": store.ca }
            })
            .to_string(),
        );
        let s3 = json!({
            "bucket": BUCKET,
            "endpoint": format!("{HOST}:{PORT}"),
            "region": "us-east-1",
            "uriStyle": "path",
            "credentialsSecret": "s3-keys",
            "caSecret": "s3-ca"
        });

        // The source: rows, a full backup, more rows, every segment archived.
        self.kube
            .apply(&cluster(SOURCE, &s3, json!({})).to_string());
        let source = self.start_single(SOURCE);
        source.query("CREATE TABLE s3_rows (n int PRIMARY KEY, batch int)");
        source.query("INSERT INTO s3_rows SELECT g, 1 FROM generate_series(1, 1000) g");
        self.backup_of(SOURCE, "repo1:full@s3");
        source.query("INSERT INTO s3_rows SELECT g, 2 FROM generate_series(1001, 1400) g");
        self.archive_now(&source);
        let source_timeline = self.timeline(&format!("{SOURCE}-0"));
        let source_backups = store.backup_labels(SOURCE);
        assert_eq!(source_backups.len(), 1, "the source's backup in the bucket");
        self.delete_cluster(SOURCE);

        // The copy, from the bucket alone.
        let t = Instant::now();
        let copy = cluster(
            COPY,
            &s3,
            json!({ "bootstrap": { "restore": {
                "cluster": SOURCE,
                "repo": "repo1",
                "repository": { "s3": s3 }
            } } }),
        );
        self.kube
            .try_apply(&copy.to_string())
            .expect("the copy is admitted");
        let job = format!("{COPY}-restore");
        wait_for(&format!("Job {job}"), 60, || self.kube.get("job", &job));
        let run = Instant::now();
        let (ok, log) = self.run_job_pod(&job);
        let run = run.elapsed();
        assert!(ok, "the restore Job from the bucket failed:\n{log}");
        let su = self.start_single(COPY);
        let rows = wait_for("the copy's rows", 60, || {
            su.try_query("SELECT count(*) || ' ' || max(batch) FROM s3_rows")
                .ok()
        });
        let took = t.elapsed();
        assert_eq!(rows, "1400 2", "every archived row");
        let timeline = self.timeline(&format!("{COPY}-0"));
        assert!(
            timeline > source_timeline,
            "a new timeline: {timeline} after {source_timeline}"
        );

        // Its own backups under its own path; the source's left as they were.
        self.backup_of(COPY, "repo1:full@first");
        assert_eq!(
            store.backup_labels(COPY).len(),
            1,
            "the copy's backup in the bucket"
        );
        assert_eq!(store.backup_labels(SOURCE), source_backups);
        figures.push(format!(
            "clone from an object store after its source was deleted (repository described inline: S3 path-style on port {PORT}, private CA): leader with 1400 of 1400 rows {:.1} s after kubectl apply, the restore Job's pod ran {:.1} s; timeline {source_timeline} → {timeline}; its first backup under its own path in the bucket",
            took.as_secs_f64(),
            run.as_secs_f64()
        ));
        self.delete_cluster(COPY);
        drop(store);
    }
}
