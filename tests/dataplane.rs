//! The data plane, for real (DESIGN.md, tests level 4): the Patroni, pgBackRest and
//! pgBouncer configurations that `render` produces, run with the real programs, against a
//! real control plane, with the operator materializing the cluster.
//!
//! `tests/dataplane/cluster.yaml` (3 instances, synchronous mode, a volume repository, the
//! pooler, users and databases) is applied through `pgpilot run` (webhooks and
//! controller), which renders every child; the StatefulSet, Job and ReplicaSet controllers make
//! Pending pods, and `kubelet.rs` runs them from the Pod objects as stored. Then:
//! election and replication, status and Service endpoints, the roles Job (twice),
//! day-2 edits of the running cluster (`day2.rs`), failover by `kill -9` under synchronous
//! replication, backup and restore (to the end and to a point in time), pooling, a quiet
//! resync and a scale-out. Figures are printed at the end (`make dataplane`).
//!
//! Needs root (namespaces, mounts), PostgreSQL 15, pgBackRest, pgBouncer and Patroni
//! (`.ci/run` installs them), and the control-plane binaries (`hack/build-controlplane.sh`).

#[path = "dataplane/backups.rs"]
mod backups;
#[path = "dataplane/certificates.rs"]
mod certificates;
#[path = "dataplane/day2.rs"]
mod day2;
#[path = "dataplane/kube.rs"]
mod kube;
#[path = "dataplane/kubelet.rs"]
mod kubelet;
#[path = "dataplane/node.rs"]
mod node;
#[path = "dataplane/objectstore.rs"]
mod objectstore;
#[path = "dataplane/outage.rs"]
mod outage;
#[path = "dataplane/restores.rs"]
mod restores;
#[path = "dataplane/rollout.rs"]
mod rollout;
#[path = "dataplane/sql.rs"]
mod sql;
#[path = "dataplane/unattended.rs"]
mod unattended;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pgpilot::devcluster::{
    self, DevCluster, OPERATOR_SERVICE_ACCOUNT, Operator, OperatorOptions, Options, free_ports,
};
use serde_json::Value;

use kube::{Kube, wait_for};
use kubelet::Kubelet;
use sql::{Conn, Session};

const CLUSTER: &str = "dp";
const NAMESPACE: &str = "dataplane";
/// Pod addresses handed out, in order (see `node.rs`).
const ADDRESSES: u8 = 100;

#[test]
fn data_plane() {
    if std::env::var_os("PGPILOT_DATAPLANE_NODE").is_none() {
        check_programs();
        // Built (with network) before entering the network namespace, which has none.
        let bin = devcluster::bin_dir(&node::repo_root()).expect("control-plane binaries");
        // SAFETY: set before any thread of ours reads the environment.
        unsafe { std::env::set_var(devcluster::BIN_DIR_ENV, bin) };
    }
    if let Some(outcome) = node::reexec_inside("data_plane") {
        if let Err(why) = outcome {
            panic!("{why}");
        }
        return;
    }
    let started = Instant::now();
    let mut h = Harness::start();
    let mut figures = Vec::new();
    let mut shown = 0;
    let mut show = |figures: &Vec<String>| {
        for f in &figures[shown..] {
            println!("dataplane: {f}");
        }
        shown = figures.len();
    };
    h.election_and_status(&mut figures);
    show(&figures);
    h.roles();
    println!(
        "dataplane: roles Job: every user and database created, logins work, a second run changed nothing"
    );
    h.live_configuration(&mut figures);
    show(&figures);
    h.config_patch_interrupted(&mut figures);
    show(&figures);
    h.replication_mode(&mut figures);
    show(&figures);
    h.restart_parameters(&mut figures);
    show(&figures);
    h.failover(&mut figures);
    show(&figures);
    h.backup_and_restore(&mut figures);
    show(&figures);
    h.backup_requests(&mut figures);
    show(&figures);
    h.inventory_and_retention(&mut figures);
    show(&figures);
    h.archiving_failure(&mut figures);
    show(&figures);
    h.clone_from_backup(&mut figures);
    show(&figures);
    h.clone_from_object_store(&mut figures);
    show(&figures);
    h.pooling(&mut figures);
    show(&figures);
    h.pooler_roll(&mut figures);
    show(&figures);
    h.steady_state(&mut figures);
    show(&figures);
    h.rollout(&mut figures);
    show(&figures);
    h.operations(&mut figures);
    show(&figures);
    h.switchover_interrupted(&mut figures);
    show(&figures);
    h.certificate_renewal(&mut figures);
    show(&figures);
    h.scale_out(&mut figures);
    show(&figures);
    h.without_operator(&mut figures);
    show(&figures);
    h.api_server_outage(&mut figures);
    show(&figures);
    figures.push(format!(
        "whole scenario: {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    println!("\n== data-plane figures ==");
    for f in &figures {
        println!("  {f}");
    }
    h.stop();
    node::scenario_completed();
}

fn check_programs() {
    let missing: Vec<&str> = [
        "pgbackrest",
        "pgbouncer",
        "psql",
        "pgbench",
        "unshare",
        "setpriv",
        "stdbuf",
        "/usr/lib/postgresql/15/bin/postgres",
        "/opt/pgpilot-patroni/bin/patroni",
        "socat",
        objectstore::MOTO,
    ]
    .into_iter()
    .filter(|p| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    assert!(
        missing.is_empty(),
        "missing {missing:?}: run .ci/run's installation step (make dataplane-deps)"
    );
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "the data-plane suite needs root (network and mount namespaces)"
    );
}

struct Harness {
    cluster: DevCluster,
    kube: Kube,
    kubelet: Arc<Kubelet>,
    operator: Operator,
    root: PathBuf,
    next_ip: u8,
    superuser: String,
    /// When the instance pods' containers were started.
    pods_started: Instant,
}

impl Harness {
    fn start() -> Harness {
        // Not under /tmp: containers mount their own /tmp over it.
        let root = PathBuf::from(format!("/var/tmp/pgpilot-dataplane-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("logs")).expect("work dir");
        set_mode(&root, 0o755);
        let addresses: Vec<String> = (1..=ADDRESSES).map(node::pod_address).collect();
        node::set_up_network(&addresses);
        let hosts = root.join("hosts");
        node::bind_hosts_file(&hosts);
        // Mount points a container image would have (empty directories).
        for dir in [
            "/pgdata",
            "/etc/patroni",
            "/etc/pgbackrest",
            "/pgbackrest",
            "/etc/pgbouncer",
        ] {
            std::fs::create_dir_all(dir).expect("mount point");
        }

        let bin = devcluster::bin_dir(&node::repo_root()).expect("control-plane binaries");
        let cluster = DevCluster::start(&Options::new(bin)).expect("starting the control plane");
        cluster.install_crd().expect("installing the CRD");
        let kube = Kube {
            kubectl: cluster.bin_dir().join("kubectl"),
            kubeconfig: cluster.kubeconfig().to_owned(),
            namespace: NAMESPACE.into(),
            cache: root.join("kubectl-cache"),
        };
        Command::new(&kube.kubectl)
            .env("KUBECONFIG", &kube.kubeconfig)
            .args(["create", "namespace", NAMESPACE])
            .status()
            .expect("kubectl create namespace");
        // Every pod below passes the API server's PodSecurity admission, `restricted`.
        let labelled = Command::new(&kube.kubectl)
            .env("KUBECONFIG", &kube.kubeconfig)
            .args([
                "label",
                "namespace",
                NAMESPACE,
                "pod-security.kubernetes.io/enforce=restricted",
            ])
            .status()
            .expect("kubectl label namespace");
        assert!(labelled.success(), "labelling the namespace restricted");
        wait_for("the namespace's default ServiceAccount", 60, || {
            kube.get("serviceaccount", "default")
        });

        // The operator as deployed (`pgpilot run`: webhook and controller), behind its
        // webhook configurations, so that every edit below is resolved and validated at
        // admission as a user's is.
        let pgpilot = env!("CARGO_BIN_EXE_pgpilot");
        let [port] = free_ports().expect("a free port");
        let webhooks = std::fs::read_to_string(node::repo_root().join("manifests/webhooks.yaml"))
            .expect("manifests/webhooks.yaml");
        let options = OperatorOptions {
            program: pgpilot.into(),
            // The operator's own ServiceAccount, as shipped: a missing permission fails.
            kubeconfig: cluster
                .operator_kubeconfig(&node::repo_root())
                .expect("the operator's ServiceAccount and RBAC"),
            cert_dir: cluster.webhook_cert_dir().to_owned(),
            listen: ([127, 0, 0, 1], port).into(),
            log: Some(root.join("logs/operator.log")),
            extra_args: [
                "--lease-namespace",
                OPERATOR_SERVICE_ACCOUNT.0,
                "--resync-seconds",
                "5",
            ]
            .map(String::from)
            .to_vec(),
        };
        let (operator, _) = cluster
            .start_operator(options, &webhooks, cluster.ca_pem())
            .expect("the operator starts and admission goes through its webhooks");
        let sample =
            std::fs::read_to_string(node::repo_root().join("tests/dataplane/cluster.yaml"))
                .expect("tests/dataplane/cluster.yaml");
        kube.apply(&sample);

        // Everything rendered, and the Pending pods the workload controllers made.
        for pod in ["dp-0", "dp-1", "dp-2", "dp-repo-host-0"] {
            wait_for(&format!("pod {pod}"), 60, || kube.get("pod", pod));
        }
        wait_for("Secret dp-superuser", 30, || {
            kube.get("secret", "dp-superuser")
        });
        let superuser = kube.secret("dp-superuser", "password");

        let server = cluster.server();
        let (host, port) = server
            .trim_start_matches("https://")
            .rsplit_once(':')
            .expect("https://HOST:PORT");
        let api_server = (host.to_owned(), port.to_owned());
        let kubelet = Kubelet::new(kube.clone(), &root, &hosts, api_server);
        let mut h = Harness {
            cluster,
            kube,
            kubelet,
            operator,
            root,
            next_ip: 1,
            superuser,
            pods_started: Instant::now(),
        };
        h.pods_started = Instant::now();
        for pod in ["dp-0", "dp-1", "dp-2", "dp-repo-host-0"] {
            let ip = h.take_ip();
            h.kubelet.start_pod(pod, &ip);
        }
        h
    }

    fn take_ip(&mut self) -> String {
        let ip = node::pod_address(self.next_ip);
        self.next_ip += 1;
        assert!(self.next_ip <= ADDRESSES, "out of pod addresses");
        ip
    }

    fn stop(self) {
        self.kubelet.shutdown();
        self.cluster.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }

    /// Waits until the operator has had time for `rounds` more resyncs (every 5 s here) of
    /// every cluster *and* has finished that many more passes (its successful reconciles,
    /// from its metrics): a check that nothing changed then follows real resyncs, however
    /// slow the machine.
    fn wait_for_resyncs(&self, rounds: u64) {
        let clusters = self.kube.list("postgresclusters", "").len() as u64;
        self.operator
            .wait_for_reconciles(
                rounds * clusters,
                Duration::from_secs(5 * rounds),
                Duration::from_secs(60 + 100 * rounds),
            )
            .unwrap_or_else(|e| panic!("{rounds} rounds of resyncs: {e}"));
    }

    fn su(&self, host: &str) -> Conn {
        Conn::new(host, "postgres", &self.superuser, "postgres")
    }

    /// Patroni's view of a member: `GET /patroni` on its REST API.
    fn patroni_state(&self, pod: &str) -> Option<Value> {
        serde_json::from_slice(&self.patroni_get(pod, "/patroni", 2)?).ok()
    }

    /// `GET path` on a member's REST API: plain HTTP, or HTTPS for a member of a cluster
    /// with TLS (its certificate is checked by `certificates.rs`, not here).
    fn patroni_get(&self, pod: &str, path: &str, seconds: u32) -> Option<Vec<u8>> {
        let ip = self.kubelet.ip(pod);
        ["http", "https"].iter().find_map(|scheme| {
            let out = Command::new("curl")
                .args(["-sfk", "--max-time", &seconds.to_string()])
                .arg(format!("{scheme}://{ip}:8008{path}"))
                .output()
                .ok()?;
            out.status.success().then_some(out.stdout)
        })
    }

    fn leader(&self, among: &[&str]) -> Option<String> {
        among
            .iter()
            .find(|p| {
                self.patroni_state(p)
                    .is_some_and(|s| s["role"] == "primary" && s["state"] == "running")
            })
            .map(|p| p.to_string())
    }

    /// Ready endpoint addresses of a Service, sorted, from its EndpointSlices (what
    /// kube-proxy routes by).
    fn endpoints(&self, service: &str) -> Vec<String> {
        let mut ips: Vec<String> = ready_addresses(&self.kube.list(
            "endpointslices",
            &format!("kubernetes.io/service-name={service}"),
        ));
        ips.sort();
        ips
    }

    /// Waits until `leader` leads, the others stream from it (one synchronously, named so by
    /// Patroni), labels, endpoints and the cluster's status all say so.
    fn check_topology(&self, leader: &str, replicas: &[&str]) {
        let leader_ip = self.kubelet.ip(leader);
        let mut replica_ips: Vec<String> = replicas.iter().map(|r| self.kubelet.ip(r)).collect();
        replica_ips.sort();
        let su = self.su(&leader_ip);
        let streaming = wait_for("two streaming replicas, one synchronous", 120, || {
            let rows = su
                .try_query("SELECT application_name, state, sync_state FROM pg_stat_replication ORDER BY application_name")
                .ok()?;
            let rows: Vec<&str> = rows.lines().collect();
            let sync = rows.iter().filter(|r| r.ends_with("|sync")).count();
            (rows.len() == replicas.len()
                && rows.iter().all(|r| r.contains("|streaming|"))
                && sync == 1)
                .then(|| rows.join("; "))
        });
        // Patroni names each standby's connection after its member (pod) name. (Client
        // addresses say nothing here: on one loopback interface, the source address of a
        // connection is its destination.)
        let names: Vec<&str> = streaming
            .split("; ")
            .map(|r| r.split('|').next().unwrap_or_default())
            .collect();
        let mut expected: Vec<&str> = replicas.to_vec();
        expected.sort();
        assert_eq!(
            names, expected,
            "pg_stat_replication on {leader}: {streaming}"
        );
        // PostgreSQL reports a standby `sync` up to a loop before Patroni names it in its
        // sync key; only a named standby may be promoted, so a failover test waits for it.
        wait_for("Patroni's sync key naming a streaming replica", 60, || {
            let sync = self.kube.get("endpoints", "dp-sync")?;
            let named = sync["metadata"]["annotations"]["sync_standby"].as_str()?;
            named
                .split(',')
                .any(|n| replicas.contains(&n))
                .then_some(())
        });
        for r in replicas {
            let ip = self.kubelet.ip(r);
            assert_eq!(
                self.su(&ip).query("SELECT pg_is_in_recovery()"),
                "t",
                "{r} is a standby"
            );
        }
        wait_for("one pod labelled primary, the leader", 60, || {
            let names: Vec<String> = self
                .kube
                .list(
                    "pods",
                    "pgpilot.io/role=primary,app.kubernetes.io/component=database,pgpilot.io/cluster=dp",
                )
                .iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            (names == [leader]).then_some(())
        });
        wait_for(
            "C-primary's endpoints: the leader; C-replicas': the others",
            60,
            || {
                (self.endpoints("dp-primary") == [leader_ip.clone()]
                    && self.endpoints("dp-replicas") == replica_ips)
                    .then_some(())
            },
        );
        wait_for("status.primary of the PostgresCluster", 90, || {
            let pgc = self.kube.get("postgrescluster", CLUSTER)?;
            (pgc["status"]["primary"] == leader).then_some(())
        });
    }

    fn election_and_status(&mut self, figures: &mut Vec<String>) {
        let t0 = self.pods_started;
        let members = ["dp-0", "dp-1", "dp-2"];
        let leader = wait_for("a Patroni leader", 180, || self.leader(&members));
        figures.push(format!(
            "leader elected and bootstrapped: {leader}, {:.1} s after the pods started",
            t0.elapsed().as_secs_f64()
        ));
        let replicas: Vec<&str> = members.iter().copied().filter(|m| *m != leader).collect();
        let leaders = members
            .iter()
            .filter(|m| {
                self.patroni_state(m)
                    .is_some_and(|s| s["role"] == "primary")
            })
            .count();
        assert_eq!(leaders, 1, "exactly one leader");
        self.check_topology(&leader, &replicas);
        figures.push(format!(
            "3 members streaming, labels, endpoints and status.primary agree: {:.1} s after the pods started",
            t0.elapsed().as_secs_f64()
        ));
    }

    /// The leader among the instance pods that exist now (five after the scale-out, and a
    /// failover may land on any of them).
    fn current_leader(&self) -> String {
        wait_for("a leader", 120, || {
            let names = self.instance_names();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            self.leader(&names)
        })
    }

    /// Users and databases as the cluster sees them, without SCRAM verifiers (salted anew
    /// by every `ALTER ROLE ... PASSWORD`).
    fn role_snapshot(&self, su: &Conn) -> String {
        su.query(
            "SELECT string_agg(format('%s:%s:%s:%s:%s', rolname, rolcanlogin, rolsuper, rolconnlimit, shobj_description(oid, 'pg_authid')), ',' ORDER BY rolname) FROM pg_roles WHERE rolname !~ '^pg_' \
             UNION ALL SELECT string_agg(format('%s:%s:%s', datname, pg_get_userbyid(datdba), datacl), ',' ORDER BY datname) FROM pg_database \
             UNION ALL SELECT md5(pg_get_functiondef('pgpilot.pooler_auth(text)'::regprocedure)) \
             UNION ALL SELECT string_agg(rolname || ':' || md5(coalesce(rolpassword, '')), ',' ORDER BY rolname) FROM pg_authid WHERE rolname !~ '^pg_'",
        )
    }

    fn roles(&mut self) {
        let leader = self.current_leader();
        let su = self.su(&self.kubelet.ip(&leader));
        let job = wait_for("the roles Job's pod", 60, || {
            self.kube
                .list("pods", "app.kubernetes.io/component=roles")
                .first()
                .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        });
        let ip = self.take_ip();
        let (ok, log) = self.kubelet.run_to_completion(&job, &ip);
        assert!(ok, "the roles Job failed:\n{log}");
        let first = self.role_snapshot(&su);

        let spec: Value = serde_yaml::from_str(
            &std::fs::read_to_string(node::repo_root().join("tests/dataplane/cluster.yaml"))
                .expect("sample"),
        )
        .expect("sample YAML");
        for db in spec["spec"]["databases"].as_array().into_iter().flatten() {
            let (name, owner) = (
                db["name"].as_str().unwrap_or_default(),
                db["owner"].as_str().unwrap_or_default(),
            );
            assert_eq!(
                su.query(&format!(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'"
                )),
                owner,
                "database {name} is owned by {owner}"
            );
        }
        for u in spec["spec"]["users"].as_array().into_iter().flatten() {
            let name = u["name"].as_str().unwrap_or_default();
            let secret = format!("dp-user-{}", name.replace('_', "-"));
            let password = self.kube.secret(&secret, "password");
            let db = self.kube.secret(&secret, "dbname");
            let host = self.kube.secret(&secret, "host");
            // The Secret's host is the primary Service, which cluster DNS resolves.
            let me = Conn::new(&host, name, &password, &db);
            assert_eq!(
                me.query("SELECT current_user"),
                name,
                "{name} logs in with its Secret"
            );
            let wrong = Conn::new(&host, name, "not-the-password", &db);
            assert!(
                wrong.try_query("SELECT 1").is_err(),
                "{name} with a wrong password is refused"
            );
        }

        // No password reached the server: the Job sent SCRAM verifiers, and not even those
        // were recorded by pg_stat_statements (loaded by default).
        // Patroni's bootstrap sets the superuser's (initdb --pwfile) and the replication
        // role's (one statement with logging and tracking turned off for it): checked too.
        su.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements");
        let users = spec["spec"]["users"].as_array().into_iter().flatten();
        let roles = users
            .map(|u| {
                let name = u["name"].as_str().unwrap_or_default().to_owned();
                let secret = format!("dp-user-{}", name.replace('_', "-"));
                (name, secret)
            })
            .chain([
                ("postgres".to_owned(), "dp-superuser".to_owned()),
                (
                    "pgpilot_replication".to_owned(),
                    "dp-replication".to_owned(),
                ),
            ]);
        for (name, secret) in roles {
            let name = name.as_str();
            let password = self.kube.secret(&secret, "password");
            let verifier = su.query(&format!(
                "SELECT rolpassword FROM pg_authid WHERE rolname = '{name}'"
            ));
            assert!(
                verifier.starts_with("SCRAM-SHA-256$4096:"),
                "{name}'s password is stored as a SCRAM verifier"
            );
            assert_eq!(
                su.query(&format!(
                    "SELECT count(*) FROM pg_stat_statements WHERE strpos(query, '{password}') > 0 OR strpos(query, '{verifier}') > 0"
                )),
                "0",
                "{name}'s password or verifier recorded by pg_stat_statements"
            );
        }

        // Again: the same pod's command in a fresh sandbox. The verifiers keep their salts.
        let ip = self.take_ip();
        let (ok, log) = self.kubelet.run_to_completion(&job, &ip);
        assert!(ok, "the roles Job failed on its second run:\n{log}");
        assert_eq!(
            self.role_snapshot(&su),
            first,
            "a second run of the roles Job changed something"
        );
    }

    fn failover(&mut self, figures: &mut Vec<String>) {
        let leader = self.current_leader();
        let members = ["dp-0", "dp-1", "dp-2"];
        let survivors: Vec<&str> = members.iter().copied().filter(|m| *m != leader).collect();
        let primary = self.su("dp-primary.dataplane.svc");
        primary.query("CREATE TABLE IF NOT EXISTS failover_seq (n bigint PRIMARY KEY)");
        let pgc = self.kube.get("postgrescluster", CLUSTER).expect("cluster");
        let ttl = pgc["spec"]["patroni"]["ttl"].as_u64().unwrap_or(30);
        let loop_wait = pgc["spec"]["patroni"]["loopWait"].as_u64().unwrap_or(10);

        // A writer commits n = 1, 2, ... one per transaction; `acked` is the last one the
        // server acknowledged.
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (acked, stop, conn) = (
                acked.clone(),
                stop.clone(),
                self.su(&self.kubelet.ip(&leader)),
            );
            std::thread::spawn(move || {
                let mut s = Session::open(&conn);
                let mut n = 1u64;
                while !stop.load(Ordering::SeqCst) {
                    match s.one(&format!(
                        "INSERT INTO failover_seq VALUES ({n}) RETURNING n;"
                    )) {
                        Some(v) if v == n.to_string() => acked.store(n, Ordering::SeqCst),
                        _ => break,
                    }
                    n += 1;
                }
            })
        };
        wait_for("1000 acknowledged rows", 60, || {
            (acked.load(Ordering::SeqCst) >= 1000).then_some(())
        });
        let killed_at = Instant::now();
        self.kubelet.crash_container(&leader, "postgres");
        writer.join().expect("writer");
        let last_acked = acked.load(Ordering::SeqCst);

        let new_leader = wait_for("a replica promoted", ttl + loop_wait + 30, || {
            self.leader(&survivors)
        });
        let failover = killed_at.elapsed();
        let new_ip = self.kubelet.ip(&new_leader);
        let present = self.su(&new_ip).query(&format!(
            "SELECT count(*) FROM failover_seq WHERE n <= {last_acked}"
        ));
        let lost = last_acked - present.parse::<u64>().expect("a count");
        figures.push(format!(
            "failover (kill -9 of the leader's container → {new_leader} promoted): {:.1} s (ttl {ttl} + loopWait {loop_wait} = {} s allowed)",
            failover.as_secs_f64(),
            ttl + loop_wait
        ));
        figures.push(format!(
            "acknowledged rows before the kill: {last_acked}; lost: {lost}"
        ));
        assert!(
            failover <= Duration::from_secs(ttl + loop_wait),
            "failover took {failover:?}"
        );
        assert_eq!(lost, 0, "synchronous mode lost acknowledged rows");

        // The kubelet restarts the crashed container: the old leader rejoins as a replica.
        let t = Instant::now();
        self.kubelet.start_container(&leader, "postgres");
        let replicas: Vec<&str> = members
            .iter()
            .copied()
            .filter(|m| *m != new_leader)
            .collect();
        self.check_topology(&new_leader, &replicas);
        figures.push(format!(
            "old leader rejoined as a streaming replica, endpoints and status follow: {:.1} s",
            t.elapsed().as_secs_f64()
        ));
    }

    /// A Job from a backup CronJob (as `kubectl create job --from=cronjob/...` makes one),
    /// run on its pod; returns the wall time.
    fn backup(&mut self, cronjob: &str, job: &str) -> Duration {
        self.kube
            .run(&["create", "job", &format!("--from=cronjob/{cronjob}"), job]);
        let pod = wait_for(&format!("the pod of Job {job}"), 60, || {
            self.kube
                .list("pods", &format!("job-name={job}"))
                .first()
                .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        });
        let ip = self.take_ip();
        let t = Instant::now();
        let (ok, log) = self.kubelet.run_to_completion(&pod, &ip);
        assert!(ok, "backup Job {job} failed:\n{log}");
        t.elapsed()
    }

    fn backup_and_restore(&mut self, figures: &mut Vec<String>) {
        let primary = self.su("dp-primary.dataplane.svc");
        primary.query("CREATE TABLE backup_rows (n bigint PRIMARY KEY, batch text)");
        primary.query("INSERT INTO backup_rows SELECT g, 'base' FROM generate_series(1, 10000) g");
        // The repository host's `stanza` container creates the stanza once the primary
        // runs; WAL archiving works from then on.
        wait_for("WAL archiving to the repository host", 180, || {
            primary.query("SELECT pg_switch_wal()");
            let failed = primary.query("SELECT archived_count > 0 FROM pg_stat_archiver");
            (failed == "t").then_some(())
        });
        // Asked for with `pgpilot.io/backup`: the operator makes the Job.
        let full = self.request_backup("repo1:full");
        primary.query("INSERT INTO backup_rows SELECT g, 'a' FROM generate_series(10001, 15000) g");
        let incr = self.request_backup("repo1:incr");
        let between = primary.query("SELECT clock_timestamp()");
        std::thread::sleep(Duration::from_millis(1500));
        primary.query("INSERT INTO backup_rows SELECT g, 'b' FROM generate_series(15001, 17000) g");
        let wal = primary.query("SELECT pg_walfile_name(pg_switch_wal())");
        wait_for("the last WAL segment archived", 60, || {
            let last =
                primary.query("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            (last.as_str() >= wal.as_str()).then_some(())
        });
        figures.push(format!(
            "on-demand backups (volume repository through the repository host, TLS): full {:.1} s, incremental {:.1} s from the request to the recorded success; the Job's pod ran {:.1} s / {:.1} s",
            full.0.as_secs_f64(),
            incr.0.as_secs_f64(),
            full.1.as_secs_f64(),
            incr.1.as_secs_f64()
        ));

        let leader = self.current_leader();
        for (label, args, expected) in [
            ("restore-end", vec![], 17000),
            (
                "restore-pitr",
                vec![
                    "--type=time".to_owned(),
                    format!("--target={between}"),
                    "--target-action=promote".to_owned(),
                ],
                15000,
            ),
        ] {
            let t = Instant::now();
            let mut restore = format!(
                "pgbackrest --stanza=db restore {}",
                args.iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            // The restored server is a check, not a member: no TCP listener, no archiving
            // into the live cluster's repository, no waiting for synchronous standbys.
            restore.push_str(" && exec postgres -D /pgdata/pg15 -c listen_addresses= -c archive_mode=off -c synchronous_standby_names= -c hot_standby=on");
            let (server, volumes) = self.kubelet.run_like(
                &leader,
                "pgbackrest",
                label,
                &["pgdata"],
                vec!["sh".into(), "-c".into(), restore],
            );
            let socket = volumes["socket"].display().to_string();
            let os = kubelet::postgres_user();
            let local = Conn::new(&socket, "postgres", "", "postgres").by_os_user(os.uid, os.gid);
            let count = wait_for(
                &format!("{label}: the restored server promoted"),
                300,
                || {
                    assert!(
                        server.exited().is_none(),
                        "{label} exited; see {}",
                        self.root
                            .join("logs")
                            .join(format!("{label}.log"))
                            .display()
                    );
                    (local.try_query("SELECT pg_is_in_recovery()").ok()? == "f")
                        .then(|| local.query("SELECT count(*) FROM backup_rows"))
                },
            );
            // The restored pg_hba is the cluster's: on the socket, `peer` refuses anyone
            // but the `postgres` operating-system user as `postgres`.
            let refused = Conn::new(&socket, "postgres", "", "postgres")
                .try_query("SELECT 1")
                .expect_err("root logged in as postgres through the socket");
            assert!(refused.contains("Peer authentication failed"), "{refused}");
            figures.push(format!(
                "{label}: restore + recovery until promoted {:.1} s, rows {count} (expected {expected})",
                t.elapsed().as_secs_f64()
            ));
            assert_eq!(count, expected.to_string(), "{label}: row count");
            server.stop(Duration::from_secs(20));
        }
    }

    fn pooling(&mut self, figures: &mut Vec<String>) {
        let pod = wait_for("a pooler pod", 60, || {
            self.kube
                .list("pods", "app.kubernetes.io/component=pooler")
                .first()
                .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
        });
        let ip = self.take_ip();
        self.kubelet.start_pod(&pod, &ip);
        let pooled = self.pooled("dp-pooler.dataplane.svc");
        wait_for("the pooler answering", 60, || {
            pooled.try_query("SELECT 1").ok()
        });
        let wrong = Conn {
            password: "wrong-password".into(),
            ..self.pooled(&ip)
        };
        let refused = wrong
            .try_query("SELECT 1")
            .expect_err("a wrong password through the pooler is refused");
        // pgBouncer answers a failed SCRAM exchange with "SASL authentication failed".
        assert!(refused.contains("authentication failed"), "{refused}");

        let (max_servers, text) = self.pooled_load(&pooled, 200, 15);
        let field = |key: &str| {
            text.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.trim().to_owned())
                .unwrap_or_default()
        };
        assert!(
            max_servers <= 20,
            "pgBouncer opened {max_servers} server connections for 200 clients (pool size 20)"
        );
        figures.push(format!(
            "pooling: 200 clients, transaction mode, ≤{max_servers} server connections seen (pool 20): {}, {}, {}",
            field("number of transactions actually processed"),
            field("latency average"),
            field("tps")
        ));
    }
}

impl Harness {
    /// A changed pool size reaches pgBouncer: the pooler's pod template carries the hash of
    /// `pgbouncer.ini`, so the Deployment rolls (a new pod ready before an old one goes),
    /// and the new pods hold at most the new number of server connections.
    fn pooler_roll(&mut self, figures: &mut Vec<String>) {
        let names = |kube: &Kube| -> Vec<(String, bool, bool)> {
            kube.list("pods", "app.kubernetes.io/component=pooler")
                .iter()
                .map(|p| {
                    (
                        p["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        p["status"]["podIP"].is_string(),
                        p["metadata"]["deletionTimestamp"].is_string(),
                    )
                })
                .collect()
        };
        let old: Vec<String> = names(&self.kube).into_iter().map(|p| p.0).collect();
        let t = Instant::now();
        self.edit(serde_json::json!({ "spec": { "pooler": { "defaultPoolSize": 5 } } }));
        // The kubelet's part for the new pods (names it has not seen); it stops the old
        // ones itself when their ReplicaSet deletes them.
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let now = names(&self.kube);
            for (name, has_ip, deleting) in &now {
                if !old.contains(name) && !has_ip && !deleting {
                    let ip = self.take_ip();
                    self.kubelet.start_pod(name, &ip);
                }
            }
            if !now.is_empty() && now.iter().all(|(n, ip, _)| !old.contains(n) && *ip) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the pooler did not roll within 180 s: {now:?}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
        let rolled = t.elapsed();
        let pooled = self.pooled("dp-pooler.dataplane.svc");
        wait_for("the new pooler answering", 60, || {
            pooled.try_query("SELECT 1").ok()
        });
        let (max_servers, _) = self.pooled_load(&pooled, 50, 8);
        assert!(
            (1..=5).contains(&max_servers),
            "{max_servers} server connections for 50 clients after defaultPoolSize 20 → 5"
        );
        figures.push(format!(
            "pooler defaultPoolSize 20 → 5: pooler pods replaced (new one ready first) in {:.1} s; 50 clients then held ≤{max_servers} server connections",
            rolled.as_secs_f64()
        ));
    }

    /// `app_reader` through the pooler at `host`. See `kubelet::local_differences` (4):
    /// before pgBouncer 1.20, `auth_query` runs in the client's database, so clients use
    /// the one `auth_dbname` names.
    pub fn pooled(&self, host: &str) -> Conn {
        let password = self.kube.secret("dp-user-app-reader", "password");
        let db = if kubelet::pgbouncer_version() < (1, 20) {
            "postgres"
        } else {
            "app"
        };
        Conn::new(host, "app_reader", &password, db)
    }

    /// `clients` pgbench clients through the pooler for `secs` seconds; returns the most
    /// server connections of `app_reader` seen on the primary meanwhile, and pgbench's
    /// report (every transaction must succeed).
    fn pooled_load(&self, pooled: &Conn, clients: u32, secs: u32) -> (u64, String) {
        let leader = self.current_leader();
        let su = self.su(&self.kubelet.ip(&leader));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (stop, su) = (stop.clone(), su.clone());
            std::thread::spawn(move || {
                let mut max = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    if let Ok(n) = su.try_query(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_reader'",
                    ) {
                        max = max.max(n.parse().unwrap_or(0));
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                max
            })
        };
        let script = self.root.join("pooled.sql");
        std::fs::write(&script, "SELECT count(*) FROM pg_stat_activity;\n")
            .expect("pgbench script");
        let out = pooled
            .command("pgbench")
            .args(["-n", "-j", "2", "-f"])
            .arg(&script)
            .args(["-c", &clients.to_string(), "-T", &secs.to_string()])
            .output()
            .expect("pgbench");
        stop.store(true, Ordering::SeqCst);
        let max_servers = sampler.join().expect("sampler");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "pgbench through the pooler failed:\n{text}\n{err}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("number of failed transactions: 0 ")),
            "{text}"
        );
        (max_servers, text)
    }
}

/// The addresses of ready endpoints in EndpointSlices.
pub fn ready_addresses(slices: &[Value]) -> Vec<String> {
    slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
