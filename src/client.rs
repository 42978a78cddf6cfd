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
    })
}
