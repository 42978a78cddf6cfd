//! A small HTTP client for the daemon's Unix socket (used by the CLI).

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

/// The daemon's answer: HTTP status and the JSON envelope.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The envelope's `message`.
    pub fn message(&self) -> String {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string()
    }

    /// The envelope's `data`, or the message as an error.
    pub fn data(self) -> Result<Value> {
        if self.ok() {
            Ok(self.body.get("data").cloned().unwrap_or(Value::Null))
        } else {
            Err(anyhow!("{}", self.message()))
        }
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

/// Sends one request to the daemon listening on `socket`.
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Reply> {
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
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    })
}
