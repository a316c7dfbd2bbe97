//! Which certificate a PostgreSQL server presents, read the way a client meets it: an
//! `SSLRequest` on its port, then a TLS handshake, and nothing more. No startup packet and
//! no credentials are sent, so the handshake needs no trust in the server: the certificate
//! is only compared with the one in the cluster's Secret, to tell whether PostgreSQL has
//! reloaded a renewed one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// PostgreSQL's `SSLRequest`: length 8, then the code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr}: the server does not offer TLS")]
    NoTls { addr: SocketAddr },
    #[error("{addr}: the server presented no certificate")]
    NoCertificate { addr: SocketAddr },
}

/// The CA certificates of a PEM file (`ca.crt`) as the roots a rustls client trusts: every
/// one readable and usable, and at least one.
pub fn ca_roots(pem: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("unreadable CA certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CA certificate".into());
    }
    Ok(roots)
}

/// The DER of the first certificate in a PEM file (`tls.crt`), if there is one.
pub fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem)
        .next()?
        .ok()
        .map(|c| c.as_ref().to_vec())
}

/// The DER of the certificate the server at `addr` presents.
pub async fn served_certificate(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<Vec<u8>, ProbeError> {
    tokio::time::timeout(timeout, handshake(addr))
        .await
        .map_err(|_| ProbeError::Timeout { addr, timeout })?
}

async fn handshake(addr: SocketAddr) -> Result<Vec<u8>, ProbeError> {
    let io = |source| ProbeError::Io { addr, source };
    let mut stream = TcpStream::connect(addr).await.map_err(io)?;
    stream.write_all(&SSL_REQUEST).await.map_err(io)?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await.map_err(io)?;
    if answer[0] != b'S' {
        return Err(ProbeError::NoTls { addr });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| io(std::io::Error::other(e)))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), stream)
        .await
        .map_err(io)?;
    let certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec());
    certificate.ok_or(ProbeError::NoCertificate { addr })
}

/// Accepts any certificate (the probe trusts nothing it learns and sends nothing), but
/// still checks the handshake's signatures, so the server does hold the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl AnyCertificate {
    fn algorithms(&self) -> &WebPkiSupportedAlgorithms {
        &self.0.signature_verification_algorithms
    }
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, self.algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, self.algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms().supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn reads_the_first_certificate_of_a_pem_file() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let pem = format!("{}{}", cert.pem(), cert.pem());
        assert_eq!(first_certificate(pem.as_bytes()), Some(cert.der().to_vec()));
        assert_eq!(first_certificate(b"not a certificate"), None);
    }

    /// A server that answers `N` to the SSLRequest, as PostgreSQL with `ssl = off` does.
    #[tokio::test]
    async fn a_server_without_tls_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 8];
            s.read_exact(&mut request).await.unwrap();
            assert_eq!(request, SSL_REQUEST);
            s.write_all(b"N").await.unwrap();
        });
        let err = served_certificate(addr, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeError::NoTls { .. }), "{err}");
    }

    /// A TLS server's configuration presenting `cert`, whose key is `key`.
    pub(crate) fn tls_server(
        cert: rustls::pki_types::CertificateDer<'static>,
        key: &rcgen::KeyPair,
    ) -> rustls::ServerConfig {
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap()
    }

    /// A TLS server behind an `S` answer: the probe returns exactly its certificate.
    #[tokio::test]
    async fn returns_the_certificate_the_server_presents() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pg".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().clone();
        let server = tls_server(der.clone(), &key);
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 8];
            s.read_exact(&mut request).await.unwrap();
            s.write_all(b"S").await.unwrap();
            let _ = acceptor.accept(s).await;
        });
        let served = served_certificate(addr, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(served, der.to_vec());
    }
}
