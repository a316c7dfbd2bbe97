//! The instances as Patroni publishes them on their pods: who leads, who waits for a
//! restart, how far each replica is behind. Read from the pods, with no request to Patroni.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::Error;
use crate::api::ClusterMember;
use crate::names;
use crate::patroni::Endpoint;
use crate::patroni::member::{self, Member, MemberStatus, STATUS_ANNOTATION, SYNC_STANDBY_ROLE};
use crate::render::component;

/// The instance pods of a cluster, sorted by name.
pub async fn pods(client: &Client, namespace: &str, cluster: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = format!(
        "{}={cluster},app.kubernetes.io/component={}",
        names::CLUSTER_LABEL,
        component::DATABASE
    );
    let mut pods = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::List("Pod".into(), e))?
        .items;
    pods.sort_by_key(|p| p.name_any());
    Ok(pods)
}

/// The pod Patroni labelled primary.
pub fn labelled_primary(pods: &[Pod]) -> Option<String> {
    pods.iter()
        .find(|p| {
            p.labels().get(names::ROLE_LABEL).map(String::as_str) == Some(names::ROLE_PRIMARY)
        })
        .map(|p| p.name_any())
}

/// Annotation `key` of pod `name` among `pods`: what a member reports on its own pod.
pub fn annotation<'a>(pods: &'a [Pod], name: &str, key: &str) -> Option<&'a str> {
    pods.iter()
        .find(|p| p.name_any() == name)?
        .annotations()
        .get(key)
        .map(String::as_str)
}

pub fn from_pods(pods: &[Pod]) -> Vec<Member> {
    pods.iter()
        .map(|p| {
            let ip = p
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|ip| ip.parse::<IpAddr>().ok());
            Member {
                name: p.name_any(),
                ip,
                api: ip.map(|ip| api(p, ip)),
                status: p
                    .annotations()
                    .get(STATUS_ANNOTATION)
                    .and_then(|a| MemberStatus::parse(a)),
            }
        })
        .collect()
}

/// Whether the pod's Patroni serves HTTPS: the kubelet probes it so.
pub fn serves_https(pod: &Pod) -> bool {
    pod.spec.iter().flat_map(|s| &s.containers).any(|c| {
        c.readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .is_some_and(|g| g.scheme.as_deref() == Some("HTTPS"))
    })
}

/// The Secret the pod mounts as its server certificate (`tls.crt`, `tls.key`, `ca.crt`).
pub fn server_tls_secret(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == crate::render::SERVER_TLS_VOLUME)?
        .secret
        .as_ref()?
        .secret_name
        .as_deref()
}

/// Where the member's REST API answers, and how: the operator speaks to Patroni as the
/// kubelet probes it. A pod's containers cannot change after it is created (Patroni, which
/// may write its pod's annotations, cannot turn the operator to plain HTTP), and during a
/// rollout that turns TLS on or off each pod is reached as it runs. Over HTTPS the
/// certificate must carry the pod's DNS name, `HOSTNAME.SUBDOMAIN.NAMESPACE.svc`.
fn api(pod: &Pod, ip: IpAddr) -> Endpoint {
    let port = names::PATRONI_PORT as u16;
    let Some(spec) = &pod.spec else {
        return Endpoint::new(ip, port);
    };
    match (
        serves_https(pod),
        &spec.hostname,
        &spec.subdomain,
        pod.namespace(),
    ) {
        (true, Some(host), Some(sub), Some(ns)) => {
            Endpoint::tls(ip, port, format!("{host}.{sub}.{ns}.svc"))
        }
        // HTTPS without a DNS name: a name nothing can serve, so the call fails closed.
        (true, ..) => Endpoint::tls(ip, port, format!("{}.invalid", pod.name_any())),
        (false, ..) => Endpoint::new(ip, port),
    }
}

/// Lag is reported in whole MiB: a status rewritten for every WAL record an idle primary
/// writes would cost a write per cluster and resync, and says nothing a DBA acts on (Patroni's
/// own failover limit, `maximumLagOnFailover`, defaults to 1 MiB).
const LAG_UNIT: u64 = 1 << 20;

/// `status.members`; `sync` holds the synchronous standbys Patroni names.
pub fn views(members: &[Member], sync: Option<&[String]>) -> Vec<ClusterMember> {
    let leader = member::leader(members);
    let named = |m: &Member| sync.is_some_and(|s| s.contains(&m.name));
    members
        .iter()
        .map(|m| {
            let s = m.status.as_ref();
            ClusterMember {
                name: m.name.clone(),
                role: s
                    .map(|s| match s.role.as_str() {
                        "replica" if named(m) => SYNC_STANDBY_ROLE.to_owned(),
                        r => r.to_owned(),
                    })
                    .filter(|r| !r.is_empty()),
                state: s.map(|s| s.state.clone()).filter(|r| !r.is_empty()),
                timeline: s.and_then(|s| s.timeline),
                lag_bytes: leader
                    .filter(|l| l.name != m.name)
                    .and_then(|l| member::lag_bytes(m, l))
                    .map(|b| i64::try_from(b / LAG_UNIT * LAG_UNIT).unwrap_or(i64::MAX)),
                pending_restart: m.pending_restart(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, role: &str, lsn: u64) -> Member {
        Member {
            name: name.into(),
            ip: None,
            api: None,
            status: Some(MemberStatus {
                role: role.into(),
                state: "running".into(),
                xlog_location: Some(lsn),
                pending_restart: role == "replica",
                ..Default::default()
            }),
        }
    }

    #[test]
    fn lag_is_reported_in_whole_mebibytes() {
        let primary = member("pg-0", "primary", 50 << 20);
        let close = member("pg-1", "replica", (50 << 20) - 4096);
        let far = member("pg-2", "replica", (47 << 20) - 1);
        let v = views(&[primary, close, far], Some(&["pg-2".to_owned()]));
        let lags: Vec<Option<i64>> = v.iter().map(|m| m.lag_bytes).collect();
        assert_eq!(lags, [None, Some(0), Some(3 << 20)]);
        assert!(v[1].pending_restart && !v[0].pending_restart);
        assert_eq!(v[0].role.as_deref(), Some("primary"));
        assert_eq!(v[1].role.as_deref(), Some("replica"));
        assert_eq!(v[2].role.as_deref(), Some(SYNC_STANDBY_ROLE));
    }

    fn pod(scheme: &str, hostname: bool) -> Pod {
        let mut spec = serde_json::json!({
            "containers": [{
                "name": "postgres",
                "readinessProbe": { "httpGet": { "path": "/readiness", "port": 8008, "scheme": scheme } }
            }],
            "subdomain": "pg-pods"
        });
        if hostname {
            spec["hostname"] = "pg-1".into();
        }
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "pg-1", "namespace": "db" },
            "spec": spec,
            "status": { "podIP": "198.18.0.12" }
        }))
        .unwrap()
    }

    #[test]
    fn members_are_reached_the_way_the_kubelet_probes_them() {
        let ip: IpAddr = "198.18.0.12".parse().unwrap();
        let https = &from_pods(&[pod("HTTPS", true)])[0];
        assert_eq!(
            https.api,
            Some(Endpoint::tls(ip, 8008, "pg-1.pg-pods.db.svc".into()))
        );
        let http = &from_pods(&[pod("HTTP", true)])[0];
        assert_eq!(http.api, Some(Endpoint::new(ip, 8008)));
        // HTTPS without a DNS name is never downgraded to plain HTTP.
        let nameless = &from_pods(&[pod("HTTPS", false)])[0];
        assert_eq!(
            nameless.api.as_ref().and_then(|a| a.tls_name.as_deref()),
            Some("pg-1.invalid")
        );
    }
}
