//! Another snapfs daemon, reached over its TCP API with its bearer token: the other end of a
//! copy or sync to another server. Async (it runs inside the daemon's runtime); requests and
//! answers are the contract's types.
//!
//! `https://` goes anywhere (the target's certificate checked against `ca_file` or the
//! system's roots, `tls.rs`); `http://` only to a loopback address: the token and the data
//! would otherwise cross the network in clear.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use serde::de::DeserializeOwned;

pub use crate::contract::TargetServer;
use crate::contract::{Envelope, ReceiveState, Received, SnapshotList};

/// A checked target: the address to connect to, the `Host` header and, for https, the
/// TLS configuration and the name its certificate must carry.
#[derive(Clone)]
pub struct Peer {
    addr: SocketAddr,
    host: String,
    token: String,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
}

/// Pieces of a request body, as a channel hands them over.
pub type Pieces = tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>;

type Piece = Result<Bytes, std::io::Error>;

fn frame(p: Piece) -> Result<Frame<Bytes>, std::io::Error> {
    p.map(Frame::data)
}

type BodyRx = tokio_stream::adapters::Map<
    tokio_stream::wrappers::ReceiverStream<Piece>,
    fn(Piece) -> Result<Frame<Bytes>, std::io::Error>,
>;

fn body_of(pieces: Pieces) -> BodyRx {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::ReceiverStream::new(pieces).map(frame as fn(Piece) -> _)
}

/// One answer: status and the envelope's bytes.
pub struct PeerReply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The target answered with an error: its status and message.
#[derive(Debug, thiserror::Error)]
#[error("the target answered {status}: {message}")]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl PeerReply {
    fn message(&self) -> String {
        serde_json::from_slice::<Envelope<serde::de::IgnoredAny>>(&self.body)
            .map_or_else(|_| "no message".to_string(), |e| e.message)
    }

    /// `data` as `T`, or [`Refused`] with the other daemon's status and message.
    pub fn data<T: DeserializeOwned>(&self) -> Result<T> {
        if !(200..300).contains(&self.status) {
            return Err(Refused {
                status: self.status,
                message: self.message(),
            }
            .into());
        }
        serde_json::from_slice::<Envelope<T>>(&self.body)
            .map(|e| e.data)
            .map_err(|e| anyhow!("unexpected answer from the target ({e}): is it another version?"))
    }
}

impl Peer {
    /// Checks `target`: `https://HOST:PORT`, or `http://HOST:PORT` whose address is
    /// loopback; a non-empty token.
    pub fn new(target: &TargetServer) -> Result<Peer> {
        let url = target.url.trim_end_matches('/');
        let (rest, https) = if let Some(r) = url.strip_prefix("https://") {
            (r, true)
        } else if let Some(r) = url.strip_prefix("http://") {
            (r, false)
        } else {
            bail!("target {url}: the URL must be https://HOST:PORT (or http:// to a loopback address)");
        };
        if rest.contains('/') || rest.contains('@') || rest.is_empty() {
            bail!("target {url}: the URL must be http(s)://HOST:PORT, nothing after the port");
        }
        let (host_name, with_port) = match rest.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (h, rest.to_string()),
            _ => (rest, format!("{rest}:{}", if https { 443 } else { 80 })),
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .with_context(|| format!("target {url}: cannot resolve the host"))?
            .collect();
        let Some(addr) = addrs.first().copied() else {
            bail!("target {url}: the host has no address");
        };
        if !https && !addrs.iter().all(|a| is_loopback(a.ip())) {
            bail!(
                "target {url} is not a loopback address: use https:// (the target serves TLS with snapfs serve --tls-cert) so that data and token do not cross the network in clear"
            );
        }
        if target.token.trim().is_empty() {
            bail!("target {url}: an empty token");
        }
        let tls = if https {
            let config = crate::tls::client_config(target.ca_file.as_deref().map(Path::new))
                .with_context(|| format!("target {url}"))?;
            let name = host_name.trim_start_matches('[').trim_end_matches(']');
            Some((config, name.to_string()))
        } else {
            None
        };
        Ok(Peer {
            addr,
            host: rest.to_string(),
            token: target.token.trim().to_string(),
            tls,
        })
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Pieces,
    ) -> Result<PeerReply> {
        let mut sender = match &self.tls {
            Some((config, name)) => {
                let tls = crate::tls::connect(config.clone(), self.addr, name).await?;
                handshake(tls).await?
            }
            None => {
                let tcp = tokio::net::TcpStream::connect(self.addr)
                    .await
                    .with_context(|| format!("cannot connect to the target {}", self.host))?;
                handshake(tcp).await?
            }
        };
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", content_type)
            .body(StreamBody::new(body_of(body)))
            .context("bad request")?;
        let res = sender
            .send_request(req)
            .await
            .context("the target closed the connection")?;
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .context("cannot read the target's answer")?
            .to_bytes();
        Ok(PeerReply {
            status,
            body: bytes.to_vec(),
        })
    }

    /// The snapshots of container `name` on the target; `None` when it has no such
    /// container.
    pub async fn snapshots(&self, name: &str) -> Result<Option<SnapshotList>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(tx);
        let path = format!("/api/v1/containers/{}/snapshots", segment(name));
        let reply = self.request("GET", &path, "application/json", rx).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        reply.data().map(Some)
    }

    /// The target's cut receive into container `name` waiting to be resumed, if any.
    pub async fn pending(&self, name: &str) -> Result<Option<ReceiveState>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(tx);
        let path = format!("/api/v1/containers/{}/receive", segment(name));
        let reply = self.request("GET", &path, "application/json", rx).await?;
        if reply.status == 404 {
            return Ok(None);
        }
        reply.data().map(Some)
    }

    /// Sends a snapshot stream (`body`) to the target's receive endpoint for container
    /// `name`.
    pub async fn receive(&self, name: &str, rollback: bool, body: Pieces) -> Result<Received> {
        let path = format!(
            "/api/v1/containers/{}/receive{}",
            segment(name),
            if rollback { "?rollback=true" } else { "" }
        );
        self.request("POST", &path, "application/octet-stream", body)
            .await?
            .data()
    }
}

/// HTTP/1 over `io`; the connection runs on the current runtime.
async fn handshake<IO>(
    io: IO,
) -> Result<hyper::client::conn::http1::SendRequest<StreamBody<BodyRx>>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .context("HTTP handshake with the target failed")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v| v.is_loopback()),
    }
}

/// A container name as one path segment.
fn segment(name: &str) -> String {
    crate::mount::url_segment(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> TargetServer {
        TargetServer {
            url: url.into(),
            token: "t".into(),
            ca_file: None,
        }
    }

    #[test]
    fn plain_http_goes_to_loopback_only() {
        assert!(Peer::new(&target("http://127.0.0.1:7000")).is_ok());
        assert!(Peer::new(&target("http://localhost:7000/")).is_ok());
        assert!(Peer::new(&target("http://[::1]:7000")).is_ok());
        for bad in [
            "https://127.0.0.1:7000/x",
            "ftp://127.0.0.1",
            "http://10.1.2.3:7000",
            "http://127.0.0.1:7000/api",
            "http://user@127.0.0.1:7000",
            "127.0.0.1:7000",
        ] {
            match Peer::new(&target(bad)) {
                Ok(_) => panic!("{bad} accepted"),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        let empty = TargetServer {
            url: "http://127.0.0.1:1".into(),
            token: " ".into(),
            ca_file: None,
        };
        let no_ca = TargetServer {
            url: "https://127.0.0.1:1".into(),
            token: "t".into(),
            ca_file: Some("/nonexistent/ca.pem".into()),
        };
        assert!(Peer::new(&no_ca).is_err());
        assert!(Peer::new(&empty).is_err());
    }
}
