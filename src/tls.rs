//! TLS for the TCP API (rustls): the daemon's listener with a certificate and key
//! (`snapfs serve --listen ADDR --tls-cert FILE --tls-key FILE`), and the client side of a
//! copy or sync to another daemon over `https://` (the target's certificate checked against a
//! CA file, or the system's roots).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read certificates from {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad PEM certificate in {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

/// The server side: the certificate chain and private key (PEM files).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read a PEM private key from {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not go together")?;
    Ok(Arc::new(config))
}

/// The client side: trusts the certificates in `ca_file` (a CA, or the target's own
/// self-signed certificate), else the system's roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(f) => {
            for c in certs(f)? {
                roots
                    .add(c)
                    .with_context(|| format!("a certificate in {} is not usable", f.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for c in found.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(anyhow!(
                    "no trusted certificates on this system: give ca_file (the certificate that signed the target's)"
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Connects to `addr` and runs the TLS handshake for `host` (the name the target's
/// certificate must carry).
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    host: &str,
) -> Result<client::TlsStream<TcpStream>> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| anyhow!("{host:?} is not a host name a certificate can carry"))?;
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the target {host}"))?;
    tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake with {host} timed out"))?
    .with_context(|| format!("TLS handshake with {host} failed"))
}

/// A TCP listener whose connections are TLS: handshakes run in tasks of their own (a slow
/// client holds up nobody), and only connections that finished theirs are accepted.
pub struct TlsListener {
    local: std::net::SocketAddr,
    ready: mpsc::Receiver<(server::TlsStream<TcpStream>, std::net::SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Result<TlsListener> {
        let local = tcp.local_addr().context("the listener's address")?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        log::warn!("TCP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => log::info!("TLS handshake from {peer} failed: {e}"),
                        Err(_) => log::info!("TLS handshake from {peer} timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
