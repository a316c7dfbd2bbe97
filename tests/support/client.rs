//! An HTTPS client that trusts only the test CA: one TLS connection per `Connection`, over
//! HTTP/1.1 or HTTP/2, exposing the certificate the server presented.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    H1,
    H2,
}

#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    ca: CertificateDer<'static>,
}

pub struct Connection {
    sender: Sender,
    /// The end-entity certificate the server presented on this connection.
    pub peer_cert: CertificateDer<'static>,
    pub alpn: Option<Vec<u8>>,
    pub tls_version: Option<rustls::ProtocolVersion>,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub fn new(addr: SocketAddr, ca: CertificateDer<'static>) -> Client {
        Client { addr, ca }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn tls(
        &self,
        http: Http,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = match http {
            Http::H1 => vec![b"http/1.1".to_vec()],
            Http::H2 => vec![b"h2".to_vec()],
        };
        TlsConnector::from(Arc::new(config))
    }

    pub async fn connect(&self, http: Http) -> Result<Connection, BoxError> {
        self.connect_with(http, rustls::ALL_VERSIONS).await
    }

    /// A new TCP and TLS connection; the handshake verifies the server against the CA.
    pub async fn connect_with(
        &self,
        http: Http,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Connection, BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = self.tls(http, versions).connect(name, tcp).await?;
        let (_, session) = tls.get_ref();
        let peer_cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or("the server presented no certificate")?
            .clone()
            .into_owned();
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let tls_version = session.protocol_version();
        let io = TokioIo::new(tls);
        let sender = match http {
            Http::H1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::H1(sender)
            }
            Http::H2 => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Sender::H2(sender)
            }
        };
        Ok(Connection {
            sender,
            peer_cert,
            alpn,
            tls_version,
        })
    }

    /// POSTs on a fresh HTTP/1.1 connection.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        self.connect(Http::H1).await?.post(path, body).await
    }

    pub async fn get(&self, path: &str) -> Result<(StatusCode, Bytes), BoxError> {
        self.connect(Http::H1).await?.get(path).await
    }
}

impl Connection {
    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        self.send(Method::POST, path, body.into()).await
    }

    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, Bytes), BoxError> {
        self.send(Method::GET, path, Bytes::new()).await
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        // HTTP/2 carries the authority in the URI; HTTP/1.1 in the Host header.
        let uri = match self.sender {
            Sender::H1(_) => path.to_owned(),
            Sender::H2(_) => format!("https://localhost{path}"),
        };
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body))?;
        let response = match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await?
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
