//! A typed client of Patroni's REST API, and the pure comparisons the controller makes with
//! what Patroni reports. It knows nothing of Kubernetes objects or of reconciling: callers
//! hand it an address and get typed answers or an error that says which call failed.
//!
//! Patroni serves its API on port 8008 of each pod: HTTPS with the cluster's server
//! certificate when the cluster has TLS, plain HTTP otherwise. Reads (`GET /config`,
//! `/patroni`) are open; writes (`PATCH /config`, `POST /restart`, `/reload`, `/switchover`)
//! need the basic-auth credentials of `restapi.authentication` (Secret `C-patroni-api`), so
//! with TLS those credentials never cross the pod network in clear.

pub mod dynamic;
pub mod member;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde::Serialize;
use serde_json::Value;

pub use member::{Member, MemberStatus, ParamChange};

/// Answers larger than this are refused: Patroni's are a few kilobytes.
const MAX_ANSWER: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{call} on {addr}: no answer within {timeout:?}")]
    Timeout {
        call: String,
        addr: String,
        timeout: Duration,
    },
    #[error("{call} on {addr}: {source}")]
    Transport {
        call: String,
        addr: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{call} on {addr}: HTTP {status}: {body}")]
    Refused {
        call: String,
        addr: String,
        status: StatusCode,
        body: String,
    },
    #[error("{call} on {addr}: unreadable answer: {source}")]
    Decode {
        call: String,
        addr: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The credentials of Patroni's `restapi.authentication`. Never printed.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Where one member's REST API listens. Built from the pod's IP (set by the kubelet), never
/// from the `api_url` a member publishes in its own annotation: whatever can write that
/// annotation must not be able to point the operator, and its credentials, elsewhere.
///
/// A member that serves HTTPS is reached at its IP too, and its certificate must carry
/// `tls_name` (the pod's DNS name) and chain to the cluster's CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
    /// The name the member's certificate is checked against; `None`: plain HTTP.
    pub tls_name: Option<String>,
}

impl Endpoint {
    /// A member that serves plain HTTP.
    pub fn new(ip: IpAddr, port: u16) -> Endpoint {
        Endpoint {
            ip,
            port,
            tls_name: None,
        }
    }

    /// A member that serves HTTPS with a certificate for `name`.
    pub fn tls(ip: IpAddr, port: u16, name: String) -> Endpoint {
        Endpoint {
            ip,
            port,
            tls_name: Some(name),
        }
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls_name.is_some() {
            "https"
        } else {
            "http"
        };
        match self.ip {
            IpAddr::V4(ip) => format!("{scheme}://{ip}:{}{path}", self.port),
            IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{}{path}", self.port),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url(""))
    }
}

/// `POST /restart`: restart this member only if Patroni flags a pending restart.
#[derive(Serialize, Debug, Clone, Default)]
pub struct RestartRequest {
    pub restart_pending: bool,
}

/// `POST /switchover`.
#[derive(Serialize, Debug, Clone)]
pub struct SwitchoverRequest {
    pub leader: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
}

/// `GET /patroni`: the member's own view of itself, live (the fields pgpilot reads). The
/// same shape as what it publishes on its pod, which may be a loop behind.
pub type MemberState = MemberStatus;

/// One line of Patroni's `/history`: timeline `timeline` ended at `lsn` (a byte position),
/// and the next began there.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineSwitch {
    pub timeline: i64,
    pub lsn: u64,
    pub reason: String,
}

impl TimelineSwitch {
    /// `[timeline, lsn, reason, time?, member?]`, as Patroni answers; `None` for a line of
    /// another shape.
    fn read(line: &[Value]) -> Option<TimelineSwitch> {
        Some(TimelineSwitch {
            timeline: line.first()?.as_i64()?,
            lsn: line.get(1)?.as_u64()?,
            reason: line.get(2)?.as_str().unwrap_or_default().to_owned(),
        })
    }
}

/// `lsn` as PostgreSQL writes an LSN: `X/Y`, upper and lower 32 bits in hex.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Where recovery ended before timeline `timeline` began: the switch out of the timeline
/// before it, from Patroni's `/history`.
pub fn switch_into(history: &[TimelineSwitch], timeline: i64) -> Option<String> {
    history
        .iter()
        .find(|s| s.timeline == timeline - 1)
        .map(|s| format_lsn(s.lsn))
}

#[derive(Clone)]
pub struct Client {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    credentials: Option<Credentials>,
    /// The cluster's CA, for members that serve HTTPS, or why there is none: then such a
    /// member is not called at all (never over plain HTTP instead).
    tls: Result<Arc<rustls::ClientConfig>, String>,
    /// For reads and configuration writes.
    timeout: Duration,
    /// For restarts and switchovers, which Patroni answers only once they are done.
    slow_timeout: Duration,
}

impl Client {
    /// The same client (and connection pool) with other credentials.
    pub fn with_credentials(&self, credentials: Option<Credentials>) -> Client {
        Client {
            credentials,
            ..self.clone()
        }
    }

    /// The same client, trusting only the CA certificates in `ca_pem` for members that
    /// serve HTTPS. A member's certificate must carry the member's own name or, failing
    /// that, `cluster_name` (the primary Service's DNS name): the identity the cluster's
    /// clients accept, so the operator trusts nothing they would not. That second name keeps
    /// a member reachable once it has loaded a certificate without its pod's name (Patroni
    /// reads the files on every reload, whoever asks for it, and the kubelet may not have
    /// replaced them yet), so it can be asked to reload the corrected one.
    pub fn with_ca(&self, ca_pem: &[u8], cluster_name: &str) -> Result<Client, String> {
        let roots = crate::pgprobe::ca_roots(ca_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .map_err(|e| e.to_string())?;
        let cluster = ServerName::try_from(cluster_name.to_owned())
            .map_err(|e| format!("{cluster_name:?}: {e}"))?;
        let verifier = Arc::new(OwnNameOrCluster { inner, cluster });
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Client {
            tls: Ok(Arc::new(config)),
            ..self.clone()
        })
    }

    /// The same client, refusing members that serve HTTPS, for the reason `why`.
    pub fn without_ca(&self, why: String) -> Client {
        Client {
            tls: Err(why),
            ..self.clone()
        }
    }

    /// A client without credentials: enough for reads.
    pub fn new() -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        Client {
            http: HttpClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            credentials: None,
            tls: Err("the cluster's CA is not known".into()),
            timeout: Duration::from_secs(5),
            slow_timeout: Duration::from_secs(120),
        }
    }

    /// `GET /config`: the dynamic configuration as stored in the DCS.
    pub async fn config(&self, at: &Endpoint) -> Result<Value, Error> {
        let body = self
            .call(Method::GET, at, "/config", None, self.timeout)
            .await?;
        decode("GET /config", at, &body)
    }

    /// `PATCH /config`: a JSON merge patch into the dynamic configuration (a `null` removes
    /// a key). Answers the configuration after the merge.
    pub async fn patch_config(&self, at: &Endpoint, patch: &Value) -> Result<Value, Error> {
        let body = self
            .call(Method::PATCH, at, "/config", Some(patch), self.timeout)
            .await?;
        decode("PATCH /config", at, &body)
    }

    /// `GET /patroni`: the member's state.
    pub async fn member(&self, at: &Endpoint) -> Result<MemberState, Error> {
        let body = self
            .call(Method::GET, at, "/patroni", None, self.timeout)
            .await?;
        decode("GET /patroni", at, &body)
    }

    /// `GET /history`: the cluster's timeline switches, as the leader keeps them in the
    /// DCS (read from PostgreSQL's timeline history files).
    pub async fn history(&self, at: &Endpoint) -> Result<Vec<TimelineSwitch>, Error> {
        let body = self
            .call(Method::GET, at, "/history", None, self.timeout)
            .await?;
        let lines: Vec<Vec<Value>> = decode("GET /history", at, &body)?;
        Ok(lines
            .iter()
            .filter_map(|l| TimelineSwitch::read(l))
            .collect())
    }

    /// `POST /restart`: returns once PostgreSQL is back (or Patroni gave up).
    pub async fn restart(&self, at: &Endpoint, request: &RestartRequest) -> Result<(), Error> {
        let body = serde_json::to_value(request).unwrap_or_default();
        self.call(Method::POST, at, "/restart", Some(&body), self.slow_timeout)
            .await
            .map(drop)
    }

    /// `POST /reload`: Patroni re-reads its configuration file and sends PostgreSQL a
    /// SIGHUP, which also re-reads changed `ssl_*` files.
    pub async fn reload(&self, at: &Endpoint) -> Result<(), Error> {
        self.call(Method::POST, at, "/reload", None, self.timeout)
            .await
            .map(drop)
    }

    /// `POST /reinitialize` on a replica: Patroni removes its data directory and creates
    /// it again from the leader. Answers once the re-creation has started.
    pub async fn reinitialize(&self, at: &Endpoint) -> Result<(), Error> {
        let body = serde_json::json!({ "force": true });
        self.call(Method::POST, at, "/reinitialize", Some(&body), self.timeout)
            .await
            .map(drop)
    }

    /// `POST /switchover` to the current leader's API.
    pub async fn switchover(
        &self,
        at: &Endpoint,
        request: &SwitchoverRequest,
    ) -> Result<(), Error> {
        let body = serde_json::to_value(request).unwrap_or_default();
        self.call(
            Method::POST,
            at,
            "/switchover",
            Some(&body),
            self.slow_timeout,
        )
        .await
        .map(drop)
    }

    async fn call(
        &self,
        method: Method,
        at: &Endpoint,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Bytes, Error> {
        let call = format!("{method} {path}");
        let addr = at.to_string();
        let transport = |source: Box<dyn std::error::Error + Send + Sync>| Error::Transport {
            call: call.clone(),
            addr: addr.clone(),
            source,
        };
        // Over TLS the request goes on a connection of its own, in origin form.
        let uri = match at.tls_name {
            Some(_) => path.to_owned(),
            None => at.url(path),
        };
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::ACCEPT, "application/json");
        if let Some(name) = &at.tls_name {
            request = request.header(header::HOST, format!("{name}:{}", at.port));
        }
        if method != Method::GET
            && let Some(c) = &self.credentials
        {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            request = request.header(header::AUTHORIZATION, format!("Basic {token}"));
        }
        let payload = match body {
            Some(v) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| transport(e.into()))?;
        let exchange = async {
            let response = match &at.tls_name {
                None => self
                    .http
                    .request(request)
                    .await
                    .map_err(|e| transport(e.into()))?,
                Some(name) => self.over_tls(at, name, request).await.map_err(transport)?,
            };
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(transport)?
                .to_bytes();
            Ok::<_, Error>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                call: call.clone(),
                addr: addr.clone(),
                timeout,
            })??;
        if !status.is_success() {
            return Err(Error::Refused {
                call,
                addr,
                status,
                body: brief(&body),
            });
        }
        Ok(body)
    }

    /// One request on a new TLS connection to `at`, whose certificate must carry `name`
    /// and chain to the cluster's CA.
    async fn over_tls(
        &self,
        at: &Endpoint,
        name: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, Box<dyn std::error::Error + Send + Sync>>
    {
        let config = match &self.tls {
            Ok(config) => config,
            Err(why) => return Err(format!("the member serves HTTPS: {why}").into()),
        };
        let server = ServerName::try_from(name.to_owned())?;
        let tcp = tokio::net::TcpStream::connect((at.ip, at.port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(config.clone())
            .connect(server, tcp)
            .await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await;
        if response.is_err() {
            driver.abort();
        }
        Ok(response?)
    }
}

/// Rustls' own verification (chain to the cluster's CA, validity, signatures), with one
/// difference: a certificate that does not carry the name asked for is accepted when it
/// carries the cluster's name. Nothing else is relaxed.
#[derive(Debug)]
struct OwnNameOrCluster {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    cluster: ServerName<'static>,
}

impl rustls::client::danger::ServerCertVerifier for OwnNameOrCluster {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error as TlsError};
        let verify = |name: &ServerName<'_>| {
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
        };
        match verify(server_name) {
            Err(TlsError::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if *server_name != self.cluster => verify(&self.cluster),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    call: &str,
    at: &Endpoint,
    body: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        call: call.into(),
        addr: at.to_string(),
        source,
    })
}

/// An answer's body for an error message: one line, at most 200 characters.
fn brief(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &line[..i]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_into_a_timeline_is_where_recovery_ended() {
        // As Patroni answers GET /history after a restore promoted timeline 3.
        let body = serde_json::json!([
            [
                1,
                50331808,
                "no recovery target specified",
                "2026-12-01T06:50:32+00:00",
                "dp-0"
            ],
            [
                2,
                4_294_967_296u64 + 0x0300_00A0,
                "before 2026-12-01 06:52:10.1+00"
            ],
            ["broken"],
        ]);
        let lines: Vec<Vec<Value>> = serde_json::from_value(body).unwrap();
        let history: Vec<TimelineSwitch> = lines
            .iter()
            .filter_map(|l| TimelineSwitch::read(l))
            .collect();
        assert_eq!(history.len(), 2);
        assert_eq!(switch_into(&history, 2).as_deref(), Some("0/30000A0"));
        assert_eq!(switch_into(&history, 3).as_deref(), Some("1/30000A0"));
        assert_eq!(switch_into(&history, 1), None);
        assert_eq!(format_lsn(0), "0/0");
    }

    #[test]
    fn endpoints_format_both_families() {
        let v4 = Endpoint::new("198.18.0.1".parse().unwrap(), 8008);
        assert_eq!(v4.url("/config"), "http://198.18.0.1:8008/config");
        let v6 = Endpoint::new("fd00::1".parse().unwrap(), 8008);
        assert_eq!(v6.url("/patroni"), "http://[fd00::1]:8008/patroni");
        let named = Endpoint::tls(
            "198.18.0.1".parse().unwrap(),
            8008,
            "pg-0.pg-pods.db.svc".into(),
        );
        assert_eq!(named.url(""), "https://198.18.0.1:8008");
    }

    /// A CA, and one server configuration per set of names with a certificate for them
    /// signed by it.
    fn member_certificates(sets: &[&[&str]]) -> (String, Vec<rustls::ServerConfig>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let servers = sets
            .iter()
            .map(|names| {
                let key = KeyPair::generate().unwrap();
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                let cert = CertificateParams::new(names)
                    .unwrap()
                    .signed_by(&key, &issuer)
                    .unwrap();
                crate::pgprobe::tests::tls_server(cert.der().clone(), &key)
            })
            .collect();
        (ca_pem, servers)
    }

    /// A CA and a member's certificate for `name`, signed by it.
    fn member_certificate(name: &str) -> (String, rustls::ServerConfig) {
        let (ca, mut servers) = member_certificates(&[&[name]]);
        (ca, servers.remove(0))
    }

    /// Serves `GET /patroni` over TLS for as long as the test runs; each request's head is
    /// sent to the returned channel.
    async fn member_over_tls(
        server: rustls::ServerConfig,
    ) -> (IpAddr, u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (heads, received) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let _ = heads.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                let body = r#"{"state":"running","role":"primary"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        (addr.ip(), addr.port(), received)
    }

    #[tokio::test]
    async fn members_serving_https_are_checked_against_the_cluster_ca() {
        let name = "pg-0.pg-pods.db.svc";
        let (ca, server) = member_certificate(name);
        let (ip, port, mut heads) = member_over_tls(server).await;
        let at = Endpoint::tls(ip, port, name.into());
        let credentials = Credentials {
            username: "patroni".into(),
            password: "s3cret".into(),
        };

        let client = Client::new()
            .with_ca(ca.as_bytes(), CLUSTER)
            .unwrap()
            .with_credentials(Some(credentials));
        let state = client.member(&at).await.unwrap();
        assert!(state.is_running() && state.is_primary());
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("GET /patroni HTTP/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {name}:{port}")), "{head}");
        client.reload(&at).await.unwrap();
        let head = heads.recv().await.unwrap();
        assert!(head.contains("authorization: Basic "), "{head}");

        // Another CA, another name, or no CA at all: nothing is sent.
        let (other_ca, _) = member_certificate(name);
        let strangers = [
            (
                Client::new().with_ca(other_ca.as_bytes(), CLUSTER).unwrap(),
                at.clone(),
            ),
            (
                Client::new().with_ca(ca.as_bytes(), CLUSTER).unwrap(),
                Endpoint::tls(ip, port, "pg-1.pg-pods.db.svc".into()),
            ),
            (
                Client::new().without_ca("Secret pg-tls has no ca.crt".into()),
                at.clone(),
            ),
        ];
        for (client, at) in strangers {
            let err = client.member(&at).await.unwrap_err();
            assert!(matches!(err, Error::Transport { .. }), "{err}");
        }
        let err = Client::new()
            .without_ca("Secret pg-tls has no ca.crt".into())
            .member(&at)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no ca.crt"), "{err}");
        assert!(heads.try_recv().is_err(), "a request reached the member");
        assert!(
            Client::new()
                .with_ca(b"not a certificate", CLUSTER)
                .is_err()
        );
    }

    /// The primary Service's name, which every member's certificate may carry.
    const CLUSTER: &str = "pg-primary.db.svc";

    #[tokio::test]
    async fn a_member_with_the_clusters_certificate_but_not_its_own_name_is_reached() {
        let own = "pg-0.pg-pods.db.svc";
        // Same CA: the cluster's name only; another cluster's Service name only.
        let (ca, servers) = member_certificates(&[&[CLUSTER], &["other-primary.db.svc"]]);
        let mut servers = servers.into_iter();
        let (ip, port, mut heads) = member_over_tls(servers.next().unwrap()).await;
        let client = Client::new().with_ca(ca.as_bytes(), CLUSTER).unwrap();
        let state = client.member(&Endpoint::tls(ip, port, own.into())).await;
        assert!(state.unwrap().is_primary());
        assert!(
            heads
                .recv()
                .await
                .unwrap()
                .contains(&format!("host: {own}:{port}"))
        );

        let (ip, port, mut heads) = member_over_tls(servers.next().unwrap()).await;
        let err = client
            .member(&Endpoint::tls(ip, port, own.into()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        assert!(heads.try_recv().is_err(), "a request reached the member");
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials {
            username: "patroni".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn error_bodies_are_one_short_line() {
        let long = "x ".repeat(500);
        let b = brief(long.as_bytes());
        assert!(b.len() <= 203 && b.ends_with("..."), "{b}");
        assert_eq!(brief(b"restart\nfailed"), "restart failed");
    }
}
