//! A small HTTP client for the daemon's Unix socket (used by the CLI): requests and answers
//! are the API contract's types (`crate::contract`).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;

use crate::contract::Envelope;

/// The daemon's answer: HTTP status and the body (the JSON envelope).
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// No request body (for [`call`]).
pub const NO_BODY: Option<&()> = None;

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The envelope's `message`.
    pub fn message(&self) -> String {
        serde_json::from_slice::<Envelope<IgnoredAny>>(&self.body)
            .map_or_else(|_| "no message".to_string(), |e| e.message)
    }

    /// The envelope's `data` as `T`, or the message as an error (also when the answer is not
    /// the envelope of a `T`: a daemon of another version).
    pub fn data<T: DeserializeOwned>(self) -> Result<T> {
        if !self.ok() {
            return Err(anyhow!("{}", self.message()));
        }
        serde_json::from_slice::<Envelope<T>>(&self.body)
            .map(|e| e.data)
            .map_err(|e| anyhow!("unexpected answer from the daemon ({e}): is it another version?"))
    }
}

/// The request never reached the daemon (nothing to connect to, or the handshake failed):
/// retrying cannot apply it twice. Any other error of [`call`] may come after the daemon
/// received the request.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotSent(String);

/// Whether `e` (from [`call`]) means the request was certainly not received.
pub fn not_sent(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NotSent>().is_some()
}

/// Sends one request to the daemon listening on `socket`, with `body` as JSON if given.
pub fn call<B: Serialize + ?Sized>(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&B>,
) -> Result<Reply> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start an async runtime")?;
    rt.block_on(async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| NotSent(format!("cannot connect to {}: {e}", socket.display())))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| NotSent(format!("HTTP handshake with the daemon failed: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let payload = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "snapfs")
            .header("content-type", "application/json")
            .body(Full::new(payload))
            .context("bad request")?;
        let res = sender
            .send_request(req)
            .await
            .context("the daemon closed the connection")?;
        reply_of(res).await
    })
}

/// An answer read whole.
async fn reply_of(res: hyper::Response<hyper::body::Incoming>) -> Result<Reply> {
    let status = res.status().as_u16();
    let bytes = res
        .into_body()
        .collect()
        .await
        .context("cannot read the daemon's answer")?
        .to_bytes();
    Ok(Reply {
        status,
        body: bytes.to_vec(),
    })
}

/// Connects to the daemon's socket and hands back an HTTP/1 sender (the connection runs on
/// the current runtime).
async fn connect(
    socket: &Path,
) -> Result<hyper::client::conn::http1::SendRequest<http_body_util::StreamBody<BodyRx>>> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| NotSent(format!("cannot connect to {}: {e}", socket.display())))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| NotSent(format!("HTTP handshake with the daemon failed: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A request body fed from a channel (what `upload` streams).
type BodyRx =
    tokio_stream::wrappers::ReceiverStream<Result<hyper::body::Frame<Bytes>, std::io::Error>>;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start an async runtime")
}

/// `GET path`, writing a 200 answer's body to `out` as it comes (a snapshot stream); any
/// other answer is the envelope, returned as the reply (its body read whole).
pub fn download(
    socket: &Path,
    path: &str,
    out: &mut dyn std::io::Write,
    seen: &mut dyn FnMut(&[u8]),
) -> Result<Reply> {
    runtime()?.block_on(async {
        let mut sender = connect(socket).await?;
        let (_tx, rx) = tokio::sync::mpsc::channel(1);
        let req = hyper::Request::builder()
            .method("GET")
            .uri(path)
            .header("host", "snapfs")
            .body(http_body_util::StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .context("bad request")?;
        drop(_tx);
        let res = sender
            .send_request(req)
            .await
            .context("the daemon closed the connection")?;
        let status = res.status().as_u16();
        if status != 200 {
            return reply_of(res).await;
        }
        let mut body = res.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the stream from the daemon broke off")?;
            if let Ok(data) = frame.into_data() {
                seen(&data);
                out.write_all(&data).context("cannot write the stream")?;
            }
        }
        out.flush().context("cannot write the stream")?;
        Ok(Reply {
            status,
            body: Vec::new(),
        })
    })
}

/// Told each piece of a stream as it passes (a progress bar).
pub type Seen = Box<dyn FnMut(&[u8]) + Send>;

/// `POST path` with `input` streamed as the body (`application/octet-stream`), read on a
/// thread of its own; returns the daemon's answer.
pub fn upload(
    socket: &Path,
    path: &str,
    mut input: Box<dyn std::io::Read + Send>,
    mut seen: Seen,
) -> Result<Reply> {
    runtime()?.block_on(async {
        let mut sender = connect(socket).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let reader = std::thread::spawn(move || -> std::io::Result<()> {
            loop {
                let mut buf = vec![0u8; 1 << 20];
                let n = match input.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                buf.truncate(n);
                seen(&buf);
                if tx
                    .blocking_send(Ok(hyper::body::Frame::data(Bytes::from(buf))))
                    .is_err()
                {
                    return Ok(()); // the daemon answered already (it refused the stream)
                }
            }
        });
        let req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header("host", "snapfs")
            .header("content-type", "application/octet-stream")
            .body(http_body_util::StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .context("bad request")?;
        let res = sender.send_request(req).await;
        let read = tokio::task::spawn_blocking(move || reader.join())
            .await
            .ok()
            .and_then(|r| r.ok());
        if let Some(Err(e)) = read {
            return Err(anyhow!("cannot read the stream: {e}"));
        }
        reply_of(res.context(
            "the daemon closed the connection (a refused stream: STORE/snapfs.log says why)",
        )?)
        .await
    })
}
