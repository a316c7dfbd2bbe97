//! The kubelet's part, played on this machine: run a Pod that the control plane created
//! (StatefulSet, Job and ReplicaSet controllers make them; they stay Pending without a
//! node), from the Pod object exactly as stored: its volumes (ConfigMap, Secret, emptyDir,
//! PersistentVolumeClaim), each container's command, args and env (`fieldRef`,
//! `secretKeyRef`, `$(VAR)` expansion), its mounts at their paths, its readiness probes;
//! and write back what a kubelet writes: `podIP`, phase, `Ready`.
//!
//! Each container runs as a real container does, minus the image: `unshare` gives it its
//! own mount namespace (its volumes bind-mounted at the pod's paths, so configuration files
//! run unmodified) and its own PID namespace (killing its PID 1 kills everything in it, as
//! a container crash does). Every way this differs from a pod on a real node is in
//! [`local_differences`] and nowhere else.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pgpilot::devcluster::process::Supervised;
use serde_json::{Value, json};

use super::kube::{Kube, decode};
use super::node;

/// The image's PATH: Patroni from its own virtualenv (`.ci/run` installs it there, outside
/// /root so that the postgres user can run it), PostgreSQL's binaries, the usual.
/// The one Node, registered by this kubelet.
pub const NODE: &str = "dataplane-node";

pub const PATRONI_VENV_BIN: &str = "/opt/pgpilot-patroni/bin";

/// The local account standing in for the image's UID 999 (see `local_differences`).
pub struct LocalUser {
    pub uid: u32,
    pub gid: u32,
}

pub fn postgres_user() -> LocalUser {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .expect("id postgres");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("the postgres user exists (Debian's postgresql package creates it)")
    };
    LocalUser {
        uid: id("-u"),
        gid: id("-g"),
    }
}

/// What a container needs changed to run here, besides its pod's own values.
#[derive(Default)]
pub struct Adapted {
    pub env: Vec<(String, String)>,
    /// Files to write into the pod's `/tmp` volume before starting, and the command to
    /// use instead.
    pub files: Vec<(String, String)>,
    pub command: Option<Vec<String>>,
}

/// **Every difference from a pod on a real node**, in one place. Configuration files,
/// commands and environment otherwise come from the API unmodified.
///
/// 1. Network: the pods share one network namespace (each has its own address on its
///    loopback interface, see `node.rs`), where every pod's `0.0.0.0:5432` would collide.
///    So each listener binds its pod IP instead: Patroni's REST API and PostgreSQL through
///    Patroni's own environment overrides, pgBackRest's TLS server through pgBackRest's,
///    pgBouncer through `listen_addr` in a copy of its file.
/// 2. The `kubernetes` Service: every container gets `KUBERNETES_SERVICE_HOST`/`_PORT`
///    naming the API server itself (127.0.0.1), where kube-proxy would route the Service's
///    ClusterIP. The in-cluster credentials are real: a token of the pod's ServiceAccount
///    (TokenRequest API) in the projected volume, so Patroni runs with the rendered Role.
/// 3. User: the local `postgres` account runs every container instead of UID 999, because
///    initdb needs a passwd entry for its user; volumes are owned by it as `fsGroup` would.
/// 4. Programs come from Debian bookworm (PostgreSQL 15, pgBackRest 2.45, pgBouncer 1.18)
///    and PyPI (Patroni) instead of the catalog's images; the exporter sidecar is not run
///    (no postgres_exporter here) and counts as ready. pgBouncer before 1.20 lacks
///    `auth_dbname`; with such a pgBouncer its line is dropped, and clients must then
///    connect to the database it names (`postgres`), where `auth_query` runs anyway.
/// 5. There is no scheduler: the kubelet registers a Node, keeps it Ready and binds each
///    pod to it itself (the EndpointSlice controller skips pods on no Node).
/// 6. Probes run every second instead of every `periodSeconds`, so that the test is fast
///    (`failureThreshold` failures in a row still make a ready pod unready, so a pod is
///    out of its Services after seconds instead of tens of seconds).
/// 7. A pod recreated under the name of one deleted here (a StatefulSet's) gets the
///    address of the one it replaces, where a real network plugin may hand out another.
/// 8. ConfigMap and Secret volumes are brought up to date every 10 s (a kubelet: within
///    its sync period plus its cache's, about a minute), file by file with a rename each
///    (a kubelet swaps a symlink to a new directory, so all files change at once).
/// 9. Name resolution is `/etc/hosts` (see `node.rs`), for the cluster's names and for the
///    one server outside it a test names (the object store, `add_external_host`), where a
///    node would ask cluster DNS and, through it, the network's resolver.
/// 10. No network plugin: the NetworkPolicies pgpilot renders are stored and not enforced
///     (every pod reaches every port). HTTPS probes, like a kubelet's, do not check the
///     certificate.
pub fn local_differences(
    program: &str,
    pod_ip: &str,
    pgbouncer_version: (u32, u32),
    read_config: impl Fn(&str) -> String,
) -> Adapted {
    let mut a = Adapted::default();
    match program {
        "patroni" => {
            a.env = vec![
                ("PATRONI_POSTGRESQL_LISTEN".into(), format!("{pod_ip}:5432")),
                ("PATRONI_RESTAPI_LISTEN".into(), format!("{pod_ip}:8008")),
            ];
        }
        "pgbackrest" => {
            a.env = vec![("PGBACKREST_TLS_SERVER_ADDRESS".into(), pod_ip.into())];
        }
        "pgbouncer" => {
            let rendered = read_config("/etc/pgbouncer/pgbouncer.ini");
            let mut text = String::new();
            for line in rendered.lines() {
                if line.starts_with("listen_addr") {
                    text.push_str(&format!("listen_addr = {pod_ip}\n"));
                } else if line.starts_with("auth_dbname") && pgbouncer_version < (1, 20) {
                    continue;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            a.files = vec![("pgbouncer.ini".into(), text)];
            a.command = Some(vec!["pgbouncer".into(), "/tmp/pgbouncer.ini".into()]);
        }
        _ => {}
    }
    a
}

/// `pgbouncer --version` → (major, minor).
pub fn pgbouncer_version() -> (u32, u32) {
    let out = Command::new("pgbouncer")
        .arg("--version")
        .output()
        .expect("pgbouncer --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// A pod's name, IP, object, whether each container runs, and its last written readiness.
type ProbeInput = (
    String,
    String,
    Value,
    Vec<(String, bool)>,
    Option<bool>,
    u32,
);

struct RunningPod {
    ip: String,
    /// The pod's volumes: name → directory.
    volumes: BTreeMap<String, PathBuf>,
    containers: BTreeMap<String, Arc<Supervised>>,
    pod: Value,
    ready: Option<bool>,
    /// Readiness probes failed in a row since the last success.
    failures: u32,
}

pub struct Kubelet {
    kube: Kube,
    root: PathBuf,
    user: LocalUser,
    /// The API server's host and port, for `KUBERNETES_SERVICE_HOST`/`_PORT`.
    api_server: (String, String),
    pgbouncer: (u32, u32),
    hosts_file: PathBuf,
    /// Names outside the cluster that pods resolve (the object store's), with addresses.
    external_hosts: Mutex<Vec<(String, String)>>,
    pods: Mutex<BTreeMap<String, RunningPod>>,
    /// Pods deleted from the API after they ran here, with their address: started again
    /// when their controller recreates them under the same name.
    replaced: Mutex<BTreeMap<String, String>>,
    /// Pods whose containers are being stopped, with their address.
    stopping: Mutex<BTreeMap<String, String>>,
    stop: AtomicBool,
}

impl Kubelet {
    pub fn new(
        kube: Kube,
        root: &Path,
        hosts_file: &Path,
        api_server: (String, String),
    ) -> Arc<Kubelet> {
        let k = Arc::new(Kubelet {
            kube,
            root: root.to_owned(),
            user: postgres_user(),
            api_server,
            pgbouncer: pgbouncer_version(),
            hosts_file: hosts_file.to_owned(),
            external_hosts: Mutex::new(Vec::new()),
            pods: Mutex::new(BTreeMap::new()),
            replaced: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        });
        k.kube.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {NODE}\n  labels: {{kubernetes.io/hostname: {NODE}}}\n"
        ));
        k.heartbeat();
        let prober = k.clone();
        std::thread::spawn(move || {
            let mut tick = 0u64;
            while !prober.stop.load(Ordering::SeqCst) {
                prober.sync_pods();
                // Every 10 s the readiness is written again even if unchanged, as a
                // kubelet's status manager re-syncs: something else (the node lifecycle
                // controller after a silence) may have changed it.
                prober.probe_all(tick.is_multiple_of(10));
                prober.refresh_dns();
                tick += 1;
                if tick.is_multiple_of(10) {
                    prober.heartbeat();
                    prober.refresh_volumes();
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        k
    }

    /// The Node's `Ready` condition, renewed as a kubelet does, so that the node lifecycle
    /// controller keeps its pods.
    fn heartbeat(&self) {
        let out = Command::new("date")
            .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        let now = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let _ = self.kube.patch_status(
            "node",
            NODE,
            &json!({ "status": { "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now, "lastTransitionTime": now
            }]}}),
        );
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let pods = std::mem::take(&mut *self.pods.lock().unwrap());
        for (_, p) in pods {
            for (_, c) in p.containers {
                c.stop(Duration::from_secs(20));
            }
        }
    }

    /// The pod's address; a pod being replaced keeps it (see `local_differences`, 7).
    pub fn ip(&self, pod: &str) -> String {
        if let Some(p) = self.pods.lock().unwrap().get(pod) {
            return p.ip.clone();
        }
        self.replaced
            .lock()
            .unwrap()
            .get(pod)
            .cloned()
            .or_else(|| self.stopping.lock().unwrap().get(pod).cloned())
            .unwrap_or_else(|| panic!("pod {pod} never ran here"))
    }

    fn log_path(&self, pod: &str, container: &str) -> PathBuf {
        self.root
            .join("logs")
            .join(format!("{pod}.{container}.log"))
    }

    /// Assigns the pod its IP (written to its status first, as the CNI plugin's address is
    /// before containers start), makes its volumes and starts every container.
    pub fn start_pod(&self, name: &str, ip: &str) {
        let pod = self
            .kube
            .get("pod", name)
            .unwrap_or_else(|| panic!("pod {name} does not exist"));
        // The scheduler's part: bind the pod to this node.
        if pod["spec"]["nodeName"].as_str().is_none() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding", "metadata": { "name": name },
                "target": { "apiVersion": "v1", "kind": "Node", "name": NODE }
            });
            let path = format!(
                "/api/v1/namespaces/{}/pods/{name}/binding",
                self.kube.namespace
            );
            self.kube
                .try_run(
                    &["create", "--raw", &path, "-f", "-"],
                    Some(&binding.to_string()),
                )
                .unwrap_or_else(|e| panic!("{e}"));
        }
        self.kube
            .patch_status(
                "pod",
                name,
                &json!({ "status": {
                    "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }],
                    "conditions": conditions(false)
                }}),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let pod = self.kube.get("pod", name).unwrap_or(pod);
        let volumes = self.make_volumes(name, &pod);
        self.pods.lock().unwrap().insert(
            name.into(),
            RunningPod {
                ip: ip.into(),
                volumes,
                containers: BTreeMap::new(),
                pod: pod.clone(),
                ready: Some(false),
                failures: 0,
            },
        );
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let cname = c["name"].as_str().unwrap_or_default();
            if runnable(c) {
                self.start_container(name, cname);
            }
        }
    }

    /// Starts (or restarts, as after a crash) one container of a running pod.
    pub fn start_container(&self, pod_name: &str, container: &str) {
        let (pod, ip, volumes) = {
            let pods = self.pods.lock().unwrap();
            let p = &pods[pod_name];
            (p.pod.clone(), p.ip.clone(), p.volumes.clone())
        };
        let spec = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .cloned()
            .unwrap_or_else(|| panic!("pod {pod_name} has no container {container}"));
        let command = self.command(&pod, &spec, &ip, &volumes, None);
        let log = self.log_path(pod_name, container);
        let process = self.spawn(command, &format!("{pod_name}/{container}"), &log);
        self.pods
            .lock()
            .unwrap()
            .get_mut(pod_name)
            .expect("pod")
            .containers
            .insert(container.into(), process);
    }

    /// Runs a pod's single container to completion (Job pods) and records the phase.
    /// Returns (success, output).
    pub fn run_to_completion(&self, name: &str, ip: &str) -> (bool, String) {
        self.start_pod(name, ip);
        let process = {
            let pods = self.pods.lock().unwrap();
            pods[name]
                .containers
                .values()
                .next()
                .cloned()
                .expect("a container")
        };
        let status = loop {
            if let Some(s) = process.exited() {
                break s;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let pod = self.pods.lock().unwrap().remove(name);
        drop(pod);
        let phase = if status.success() {
            "Succeeded"
        } else {
            "Failed"
        };
        let _ = self.kube.patch_status(
            "pod",
            name,
            &json!({ "status": { "phase": phase, "conditions": conditions(false) } }),
        );
        let log = self.log_path(name, process.name().split('/').nth(1).unwrap_or_default());
        (
            status.success(),
            std::fs::read_to_string(log).unwrap_or_default(),
        )
    }

    /// Runs `command` in a sandbox shaped like `container` of `like_pod` (its volumes and
    /// mounts, its environment) but with fresh directories for the volumes named in
    /// `fresh`: a restore into a new data directory. Returns the running process and the
    /// sandbox's volume directories.
    pub fn run_like(
        &self,
        like_pod: &str,
        container: &str,
        label: &str,
        fresh: &[&str],
        command: Vec<String>,
    ) -> (Arc<Supervised>, BTreeMap<String, PathBuf>) {
        let (pod, ip, mut volumes) = {
            let pods = self.pods.lock().unwrap();
            let p = &pods[like_pod];
            (p.pod.clone(), p.ip.clone(), p.volumes.clone())
        };
        for v in fresh {
            let dir = self.root.join("sandboxes").join(label).join(v);
            self.make_dir(&dir, 0o2775);
            volumes.insert((*v).into(), dir);
        }
        for v in ["socket", "tmp"] {
            if volumes.contains_key(v) {
                let dir = self.root.join("sandboxes").join(label).join(v);
                self.make_dir(&dir, 0o2775);
                volumes.insert(v.into(), dir);
            }
        }
        let spec = pod["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == container)
            .cloned()
            .expect("container");
        let cmd = self.command(&pod, &spec, &ip, &volumes, Some(command));
        let log = self.root.join("logs").join(format!("{label}.log"));
        (self.spawn(cmd, label, &log), volumes)
    }

    /// SIGKILL to the container's PID 1: the kernel kills every process of its PID
    /// namespace, as when a container crashes. Returns when they are gone.
    pub fn crash_container(&self, pod: &str, container: &str) {
        let process = self
            .pods
            .lock()
            .unwrap()
            .get_mut(pod)
            .and_then(|p| p.containers.remove(container))
            .expect("running container");
        let unshare = process.pid();
        let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
            .unwrap_or_default();
        for pid in children.split_whitespace() {
            node::run("kill", &["-9", pid]);
        }
        kube_wait(|| process.exited().is_some());
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT) to the container's processes whose
    /// command line names `program`, and to nothing else: `STOP` to `patroni` freezes
    /// Patroni while the PostgreSQL it started runs on. (Patroni started as a container's
    /// PID 1 forks itself and runs as that child, the parent only reaping: both are sent it.)
    pub fn signal_container(&self, pod: &str, container: &str, program: &str, signal: &str) {
        let unshare = self
            .pods
            .lock()
            .unwrap()
            .get(pod)
            .and_then(|p| p.containers.get(container))
            .map(|p| p.pid())
            .expect("running container");
        let children = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default()
        };
        let mut pending: Vec<String> = children(&unshare.to_string())
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let mut sent = 0;
        while let Some(pid) = pending.pop() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(program) {
                node::run("kill", &[&format!("-{signal}"), &pid]);
                sent += 1;
                pending.extend(children(&pid).split_whitespace().map(str::to_owned));
            }
        }
        assert!(sent > 0, "no {program} process in {pod}/{container}");
    }

    fn spawn(&self, command: Command, name: &str, log: &Path) -> Arc<Supervised> {
        let mut command = command;
        let file = std::fs::File::create(log).expect("log file");
        command
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .stdin(Stdio::null());
        Supervised::spawn(name, command, Some(log.to_owned())).expect("spawning unshare")
    }

    /// `unshare` + mounts + drop to the postgres user + the container's command.
    fn command(
        &self,
        pod: &Value,
        c: &Value,
        ip: &str,
        volumes: &BTreeMap<String, PathBuf>,
        command_override: Option<Vec<String>>,
    ) -> Command {
        let mut env = self.env(pod, c);
        let expand = |s: &str, env: &[(String, String)]| expand_vars(s, env);
        let mut argv: Vec<String> = c["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(c["args"].as_array().into_iter().flatten())
            .map(|v| expand(v.as_str().unwrap_or_default(), &env))
            .collect();
        // Mounts, parents first; read-only ones remounted after all binds.
        let mut mounts: Vec<(String, PathBuf, bool)> = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let dir = volumes[m["name"].as_str().unwrap_or_default()].clone();
                let dir = match m["subPath"].as_str() {
                    Some(sub) => dir.join(sub),
                    None => dir,
                };
                (
                    m["mountPath"].as_str().unwrap_or_default().to_owned(),
                    dir,
                    m["readOnly"].as_bool().unwrap_or(false),
                )
            })
            .collect();
        mounts.sort_by_key(|(path, _, _)| path.clone());
        let program = argv.first().cloned().unwrap_or_default();
        let tmp = volumes.get("tmp").cloned();
        let read_config = |path: &str| -> String {
            mounts
                .iter()
                .filter(|(m, _, _)| path.starts_with(m.as_str()))
                .max_by_key(|(m, _, _)| m.len())
                .map(|(m, dir, _)| {
                    std::fs::read_to_string(dir.join(path[m.len()..].trim_start_matches('/')))
                        .unwrap_or_default()
                })
                .unwrap_or_default()
        };
        let adapted = local_differences(&program, ip, self.pgbouncer, read_config);
        env.extend(adapted.env);
        for (file, text) in &adapted.files {
            let dir = tmp.as_ref().expect("a /tmp volume");
            let path = dir.join(file);
            std::fs::write(&path, text).expect("writing an adapted file");
            let _ = chown(&path, Some(self.user.uid), Some(self.user.gid));
        }
        if let Some(cmd) = adapted.command {
            argv = cmd;
        }
        if let Some(cmd) = command_override {
            argv = cmd;
        }

        let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut script = String::from("set -e\n");
        for (path, dir, _) in &mounts {
            script.push_str(&format!(
                "mkdir -p {p} && mount --bind {d} {p}\n",
                p = q(path),
                d = q(&dir.display().to_string())
            ));
        }
        for (path, _, ro) in &mounts {
            if *ro {
                script.push_str(&format!("mount -o remount,bind,ro {}\n", q(path)));
            }
        }
        script.push_str(&format!(
            "exec setpriv --reuid={} --regid={} --clear-groups -- \"$@\"\n",
            self.user.uid, self.user.gid
        ));
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child=SIGTERM",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(&argv)
        // A container starts in its image's working directory, not in ours: the test may
        // run from a checkout under /tmp, which the pod's own /tmp hides.
        .current_dir("/")
        .env_clear()
        .env(
            "PATH",
            format!("{PATRONI_VENV_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"),
        )
        .env("HOME", "/tmp")
        .env("LANG", "C.UTF-8")
        .env("KUBERNETES_SERVICE_HOST", &self.api_server.0)
        .env("KUBERNETES_SERVICE_PORT", &self.api_server.1);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The container's environment as the kubelet computes it.
    fn env(&self, pod: &Value, c: &Value) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        // `$(VAR)` may name a variable defined earlier or a service's (the `kubernetes`
        // Service's are given to every container, see `command`).
        let service = [
            (
                "KUBERNETES_SERVICE_HOST".to_owned(),
                self.api_server.0.clone(),
            ),
            (
                "KUBERNETES_SERVICE_PORT".to_owned(),
                self.api_server.1.clone(),
            ),
        ];
        for e in c["env"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default().to_owned();
            let value = if let Some(v) = e["value"].as_str() {
                let known: Vec<(String, String)> =
                    service.iter().chain(env.iter()).cloned().collect();
                expand_vars(v, &known)
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                let pointer = format!("/{}", path.replace('.', "/"));
                pod.pointer(&pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
                self.kube.secret(
                    r["name"].as_str().unwrap_or_default(),
                    r["key"].as_str().unwrap_or_default(),
                )
            } else {
                panic!("unsupported env source in {e}")
            };
            env.push((name, value));
        }
        env
    }

    fn make_dir(&self, dir: &Path, mode: u32) {
        std::fs::create_dir_all(dir).expect("creating a volume directory");
        chown(dir, Some(self.user.uid), Some(self.user.gid)).expect("chown");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn make_volumes(&self, pod_name: &str, pod: &Value) -> BTreeMap<String, PathBuf> {
        let mut out = BTreeMap::new();
        for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or_default().to_owned();
            let dir = if let Some(claim) = v["persistentVolumeClaim"]["claimName"].as_str() {
                // Claims outlive pods: the same directory for every pod that mounts it.
                let dir = self.root.join("volumes").join(claim);
                if !dir.exists() {
                    self.make_dir(&dir, 0o2775);
                }
                dir
            } else {
                let dir = self.root.join("pods").join(pod_name).join(&name);
                let _ = std::fs::remove_dir_all(&dir);
                if v.get("emptyDir").is_some() {
                    self.make_dir(&dir, 0o1777);
                } else if let Some(found) = self.project_object(&dir, v) {
                    assert!(found, "the ConfigMap or Secret of volume {name} exists");
                } else if let Some(p) = v.get("projected") {
                    self.projected(&dir, pod, p);
                } else {
                    panic!("unsupported volume {v}");
                }
                dir
            };
            out.insert(name, dir);
        }
        out
    }

    /// A ConfigMap or Secret volume: its `items` (or every key), owned by root and the
    /// pod's group, with `defaultMode`.
    fn project(
        &self,
        dir: &Path,
        data: &Value,
        source: &Value,
        value: impl Fn(&Value) -> Option<String>,
        default_mode: u32,
    ) {
        std::fs::create_dir_all(dir).expect("volume dir");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mode = source["defaultMode"]
            .as_u64()
            .map_or(default_mode, |m| m as u32);
        let items: Vec<(String, String)> = match source["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|i| {
                    (
                        i["key"].as_str().unwrap_or_default().into(),
                        i["path"].as_str().unwrap_or_default().into(),
                    )
                })
                .collect(),
            None => data
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| (k.clone(), k.clone()))
                .collect(),
        };
        for (key, path) in items {
            let text = value(&data[&key]).unwrap_or_else(|| panic!("missing key {key}"));
            self.write_file(&dir.join(path), &text, mode);
        }
    }

    /// The service-account volume: a fresh token of the pod's ServiceAccount, the cluster
    /// CA, the namespace.
    fn projected(&self, dir: &Path, pod: &Value, p: &Value) {
        std::fs::create_dir_all(dir).expect("volume dir");
        let mode = p["defaultMode"].as_u64().map_or(0o644, |m| m as u32);
        for source in p["sources"].as_array().into_iter().flatten() {
            if let Some(t) = source.get("serviceAccountToken") {
                let account = pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default");
                let token = self
                    .kube
                    .run(&["create", "token", account, "--duration=4h"]);
                self.write_file(
                    &dir.join(t["path"].as_str().unwrap_or("token")),
                    token.trim(),
                    mode,
                );
            } else if let Some(cm) = source.get("configMap") {
                let obj = self
                    .kube
                    .get("configmap", cm["name"].as_str().unwrap_or_default())
                    .expect("the ConfigMap exists");
                self.project(
                    dir,
                    &obj["data"],
                    cm,
                    |v| v.as_str().map(str::to_owned),
                    mode,
                );
            } else if let Some(d) = source.get("downwardAPI") {
                for item in d["items"].as_array().into_iter().flatten() {
                    let path = item["fieldRef"]["fieldPath"].as_str().unwrap_or_default();
                    let value = pod
                        .pointer(&format!("/{}", path.replace('.', "/")))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    self.write_file(
                        &dir.join(item["path"].as_str().unwrap_or_default()),
                        value,
                        mode,
                    );
                }
            }
        }
    }

    /// Writes a volume's file whole: a new version is written aside and renamed over the
    /// old one, so a reader sees one or the other; an unchanged file is left alone.
    fn write_file(&self, file: &Path, text: &str, mode: u32) {
        if std::fs::read_to_string(file).is_ok_and(|old| old == text) {
            return;
        }
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let aside = file.with_file_name(format!(".{name}.new"));
        std::fs::write(&aside, text).expect("writing a projected file");
        chown(&aside, Some(0), Some(self.user.gid)).expect("chown");
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(mode)).expect("chmod");
        std::fs::rename(&aside, file).expect("replacing a projected file");
    }

    /// ConfigMap and Secret volumes follow their objects, as a kubelet's periodic sync
    /// makes them (see `local_differences`, 8).
    fn refresh_volumes(&self) {
        let pods: Vec<(Value, BTreeMap<String, PathBuf>)> = self
            .pods
            .lock()
            .unwrap()
            .values()
            .map(|p| (p.pod.clone(), p.volumes.clone()))
            .collect();
        for (pod, volumes) in pods {
            for v in pod["spec"]["volumes"].as_array().into_iter().flatten() {
                let Some(dir) = v["name"].as_str().and_then(|n| volumes.get(n)) else {
                    continue;
                };
                // A missing object leaves the files as they are, as a kubelet does.
                self.project_object(dir, v);
            }
        }
    }

    /// Writes a ConfigMap or Secret volume `v` into `dir` from its object as stored now;
    /// `None` for other kinds of volume, `Some(false)` when the object does not exist.
    fn project_object(&self, dir: &Path, v: &Value) -> Option<bool> {
        if let Some(cm) = v.get("configMap") {
            let name = cm["name"].as_str().unwrap_or_default();
            let obj = self.kube.get("configmap", name);
            if let Some(obj) = &obj {
                self.project(
                    dir,
                    &obj["data"],
                    cm,
                    |v| v.as_str().map(str::to_owned),
                    0o644,
                );
            }
            Some(obj.is_some())
        } else if let Some(secret) = v.get("secret") {
            let name = secret["secretName"].as_str().unwrap_or_default();
            let obj = self.kube.get("secret", name);
            if let Some(obj) = &obj {
                self.project(dir, &obj["data"], secret, decode, 0o644);
            }
            Some(obj.is_some())
        } else {
            None
        }
    }

    /// What a kubelet does with pods deleted from the API: it stops their containers
    /// (SIGTERM, SIGKILL after the pod's grace period) and then removes the object. A pod
    /// its controller then recreates under the same name (a StatefulSet's) is started again
    /// on the same address.
    fn sync_pods(self: &Arc<Self>) {
        // No answer is not "no pods": a kubelet keeps its pods while the API is away.
        let Some(listed) = self.kube.try_list("pods", "") else {
            return;
        };
        let object = |name: &str| listed.iter().find(|p| p["metadata"]["name"] == name);
        let gone: Vec<(String, RunningPod)> = {
            let mut pods = self.pods.lock().unwrap();
            let names: Vec<String> = pods
                .iter()
                .filter(|(name, p)| match object(name) {
                    None => true,
                    Some(o) => {
                        o["metadata"]["uid"] != p.pod["metadata"]["uid"]
                            || !o["metadata"]["deletionTimestamp"].is_null()
                    }
                })
                .map(|(name, _)| name.clone())
                .collect();
            let mut stopping = self.stopping.lock().unwrap();
            names
                .into_iter()
                .filter_map(|n| pods.remove(&n).map(|p| (n, p)))
                .inspect(|(n, p)| {
                    stopping.insert(n.clone(), p.ip.clone());
                })
                .collect()
        };
        for (name, p) in gone {
            let grace = p.pod["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap_or(30);
            let uid = p.pod["metadata"]["uid"].clone();
            let kubelet = self.clone();
            std::thread::spawn(move || {
                let stopping: Vec<_> = p
                    .containers
                    .values()
                    .cloned()
                    .map(|c| std::thread::spawn(move || c.stop(Duration::from_secs(grace))))
                    .collect();
                for s in stopping {
                    let _ = s.join();
                }
                if kubelet
                    .kube
                    .get("pod", &name)
                    .is_some_and(|o| o["metadata"]["uid"] == uid)
                {
                    let _ = kubelet.kube.try_run(
                        &[
                            "delete",
                            "pod",
                            &name,
                            "--grace-period=0",
                            "--force",
                            "--wait=false",
                        ],
                        None,
                    );
                }
                kubelet.replaced.lock().unwrap().insert(name.clone(), p.ip);
                kubelet.stopping.lock().unwrap().remove(&name);
            });
        }
        let again: Vec<(String, String)> = {
            let replaced = self.replaced.lock().unwrap();
            listed
                .iter()
                .filter(|o| {
                    o["metadata"]["deletionTimestamp"].is_null()
                        && o["status"]["podIP"].is_null()
                        && o["spec"]["nodeName"].as_str().is_none_or(|n| n == NODE)
                })
                .filter_map(|o| {
                    let name = o["metadata"]["name"].as_str()?;
                    replaced.get(name).map(|ip| (name.to_owned(), ip.clone()))
                })
                .collect()
        };
        for (name, ip) in again {
            self.start_pod(&name, &ip);
            self.replaced.lock().unwrap().remove(&name);
        }
    }

    /// Readiness: every container runs and passes its readiness probe; written to the
    /// Pod's status when it changes.
    fn probe_all(&self, resync: bool) {
        let snapshot: Vec<ProbeInput> = {
            let pods = self.pods.lock().unwrap();
            pods.iter()
                .map(|(n, p)| {
                    let alive = p
                        .containers
                        .iter()
                        .map(|(c, proc_)| (c.clone(), proc_.exited().is_none()))
                        .collect();
                    (
                        n.clone(),
                        p.ip.clone(),
                        p.pod.clone(),
                        alive,
                        p.ready,
                        p.failures,
                    )
                })
                .collect()
        };
        for (name, ip, pod, alive, was, failures) in snapshot {
            // As a kubelet: a stopped container makes the pod unready at once; a failing
            // probe only after `failureThreshold` failures in a row (default 3); one success
            // makes it ready.
            let mut running = true;
            let mut passed = true;
            let mut threshold = 1;
            for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
                if !runnable(c) {
                    continue;
                }
                let cname = c["name"].as_str().unwrap_or_default();
                running &= alive.iter().any(|(n, a)| n == cname && *a);
                let p = &c["readinessProbe"];
                if !p.is_null() {
                    threshold = threshold.max(p["failureThreshold"].as_u64().unwrap_or(3) as u32);
                }
                passed = passed && running && probe(p, &ip, c);
            }
            let failures = if passed { 0 } else { failures + 1 };
            if let Some(p) = self.pods.lock().unwrap().get_mut(&name) {
                p.failures = failures;
            }
            let ready = running && (passed || (was == Some(true) && failures < threshold));
            if (resync || was != Some(ready))
                && self
                    .kube
                    .patch_status(
                        "pod",
                        &name,
                        &json!({ "status": { "conditions": conditions(ready) } }),
                    )
                    .is_ok()
                && let Some(p) = self.pods.lock().unwrap().get_mut(&name)
            {
                p.ready = Some(ready);
            }
        }
    }

    /// A name outside the cluster that pods resolve to `ip` from now on (as a node's
    /// resolver would resolve a server on the network).
    pub fn add_external_host(&self, name: &str, ip: &str) {
        self.external_hosts
            .lock()
            .unwrap()
            .push((name.to_owned(), ip.to_owned()));
        self.refresh_dns();
    }

    /// Cluster DNS: each pod's `hostname.subdomain.NAMESPACE.svc`, and each Service's
    /// `NAME.NAMESPACE.svc` resolving to the first ready address of its EndpointSlices (the
    /// part kube-proxy plays for a ClusterIP).
    fn refresh_dns(&self) {
        let ns = &self.kube.namespace;
        let mut entries = self.external_hosts.lock().unwrap().clone();
        for (_, p) in self.pods.lock().unwrap().iter() {
            let spec = &p.pod["spec"];
            if let (Some(h), Some(s)) = (spec["hostname"].as_str(), spec["subdomain"].as_str()) {
                entries.push((format!("{h}.{s}.{ns}.svc"), p.ip.clone()));
            }
        }
        let slices = self.kube.list("endpointslices", "");
        for slice in &slices {
            let service = slice["metadata"]["labels"]["kubernetes.io/service-name"]
                .as_str()
                .unwrap_or_default();
            let of_service: Vec<Value> = slices
                .iter()
                .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
                .cloned()
                .collect();
            if let Some(ip) = crate::ready_addresses(&of_service).first() {
                entries.push((format!("{service}.{ns}.svc"), ip.clone()));
            }
        }
        entries.dedup();
        node::write_hosts(&self.hosts_file, &entries);
    }
}

/// Containers this machine can run (see `local_differences`, point 4).
fn runnable(c: &Value) -> bool {
    c["name"] != "exporter"
}

fn conditions(ready: bool) -> Value {
    let s = if ready { "True" } else { "False" };
    json!([
        { "type": "PodScheduled", "status": "True" },
        { "type": "Initialized", "status": "True" },
        { "type": "ContainersReady", "status": s },
        { "type": "Ready", "status": s }
    ])
}

/// One readiness probe: `httpGet` (2xx/3xx) or `tcpSocket`; none means ready.
fn probe(p: &Value, ip: &str, container: &Value) -> bool {
    let port = |v: &Value| -> Option<u16> {
        v.as_u64().map(|p| p as u16).or_else(|| {
            container["ports"]
                .as_array()?
                .iter()
                .find(|cp| cp["name"] == *v)?["containerPort"]
                .as_u64()
                .map(|p| p as u16)
        })
    };
    let timeout = Duration::from_secs(2);
    if let Some(h) = p.get("httpGet") {
        let Some(port) = port(&h["port"]) else {
            return false;
        };
        let path = h["path"].as_str().unwrap_or("/");
        if h["scheme"] == "HTTPS" {
            // As the kubelet does: TLS without checking the certificate.
            return https_probe(ip, port, path, timeout);
        }
        let Ok(addr) = format!("{ip}:{port}").parse::<SocketAddr>() else {
            return false;
        };
        let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(timeout));
        use std::io::{Read, Write};
        if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 12];
        let n = s.read(&mut buf).unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]);
        return head.starts_with("HTTP/1.") && matches!(head.get(9..10), Some("2") | Some("3"));
    }
    if let Some(t) = p.get("tcpSocket") {
        let Some(port) = port(&t["port"]) else {
            return false;
        };
        return format!("{ip}:{port}")
            .parse::<SocketAddr>()
            .ok()
            .and_then(|a| TcpStream::connect_timeout(&a, timeout).ok())
            .is_some();
    }
    true
}

/// An HTTPS probe: a 2xx or 3xx answer over TLS, the certificate not checked.
fn https_probe(ip: &str, port: u16, path: &str, timeout: Duration) -> bool {
    let url = format!("https://{ip}:{port}{path}");
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"])
        .arg(timeout.as_secs().to_string())
        .arg(&url)
        .output();
    let code = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    code.is_ok_and(|c| c.starts_with('2') || c.starts_with('3'))
}

/// `$(VAR)` references to variables defined earlier; `$$` escapes.
pub fn expand_vars(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &body[..end])
        {
            out.push_str(v);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn kube_wait(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("a killed container did not exit");
}
