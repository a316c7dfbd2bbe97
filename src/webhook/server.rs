//! HTTPS on a TCP listener: TLS 1.2 and 1.3 (rustls, ring), HTTP/1.1 and HTTP/2 chosen by
//! ALPN, and a graceful shutdown that finishes requests in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use http::{HeaderValue, Request, Version, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::ResolvesServerCert;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A client has this long to complete the TLS handshake, and then to send request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long after shutdown begins; the Deployment's
/// terminationGracePeriodSeconds (30) leaves room for it.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

pub fn tls_config(
    provider: Arc<CryptoProvider>,
    certs: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` until `shutdown`, then stops accepting and waits for open requests.
///
/// Connections end at `max_age`: the API server keeps its connections to a webhook open
/// indefinitely, and a renewed certificate reaches a client only through a new handshake.
/// Neither end may race the client: an HTTP/2 connection gets GOAWAY (requests the server
/// did not take are retried by the client), an HTTP/1.1 connection answers its next request
/// with `Connection: close` (closing an idle one could meet a request already on its way,
/// which a client does not retry).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    app: Router,
    max_age: Duration,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, usually: pause rather than spin.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let opened = Instant::now();
        let service = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let h1 = request.version() < Version::HTTP_2;
            let answer = hyper::service::Service::call(&service, request);
            async move {
                let mut response = answer.await?;
                if h1 && opened.elapsed() >= max_age {
                    let close = HeaderValue::from_static("close");
                    response.headers_mut().insert(header::CONNECTION, close);
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let shutdown = shutdown.clone();
        // Tracked from before the handshake, so that shutdown waits for this connection too.
        connections.spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let mut http = auto::Builder::new(TokioExecutor::new());
            http.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT);
            let connection = http.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => Some(ended),
                _ = shutdown.cancelled() => None,
                _ = tokio::time::sleep(max_age), if h2 => None,
            };
            let ended = match ended {
                Some(ended) => ended,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; finishing requests in flight");
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}
