//! Snapshot streams over HTTP: `GET /containers/{id}/send` answers with the stream as its
//! body (`application/octet-stream`), `POST /containers/{id}/receive` takes one as its body.
//! Both bridge the async body to the blocking store code through a bounded channel, so a
//! stream of any size passes in constant memory. An error before the first byte of a send is
//! the usual envelope; one after it cuts the body short, which every receiver refuses (no
//! trailer).

use std::io;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::{mpsc, oneshot};

use super::*;
use contract::{ReceiveQuery, ReceiveState, Received, SendQuery};

/// Bytes a send hands to the HTTP body at a time.
const PIECE: usize = 1 << 20;

/// The blocking side of a send: buffers writes into pieces for the body; the first piece
/// also tells the handler that the stream started.
pub(super) struct BodyWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    started: Option<oneshot::Sender<Result<(), ServiceError>>>,
    buf: Vec<u8>,
}

impl BodyWriter {
    pub(super) fn new(
        tx: mpsc::Sender<Result<Bytes, io::Error>>,
        started: Option<oneshot::Sender<Result<(), ServiceError>>>,
    ) -> BodyWriter {
        BodyWriter {
            tx,
            started,
            buf: Vec::with_capacity(PIECE),
        }
    }

    /// Hands over what is buffered (at the end of a stream).
    pub(super) fn flush_all(&mut self) -> io::Result<()> {
        self.push()
    }

    fn push(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Some(s) = self.started.take() {
            let _ = s.send(Ok(()));
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl io::Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}

#[utoipa::path(get, path = "/api/v1/containers/{id}/send", tag = "snapshots", params(("id" = String, Path, description = "container id or name"), SendQuery), responses((status = 200, description = "The snapshot stream (application/octet-stream; format in ARCHITECTURE.md)", content_type = "application/octet-stream", body = Vec<u8>), (status = 404, description = "No such container or snapshot", body = ErrorAnswer)))]
pub(super) async fn send_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<SendQuery>,
) -> Response {
    let what = match (&q.snapshot, &q.resume) {
        (Some(s), None) => s.clone(),
        (None, Some(_)) if q.from.is_none() => "resumed".to_string(),
        (None, Some(_)) => return bad("from goes with snapshot, not with resume").into_response(),
        _ => return bad("give snapshot (and from), or resume").into_response(),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
    let (started_tx, started_rx) = oneshot::channel();
    let worker = svc.clone();
    tokio::task::spawn_blocking(move || {
        let mut w = BodyWriter::new(tx.clone(), Some(started_tx));
        let r = match (&q.snapshot, &q.resume) {
            (_, Some(token)) => worker.send_resumed(&id, token, &mut w),
            (Some(snap), None) => worker.send_snapshot(&id, snap, q.from.as_deref(), &mut w),
            (None, None) => Err(ServiceError::Invalid("nothing to send".into())),
        };
        match (r, w.started.take()) {
            (Ok(sent), _) => {
                if w.push().is_ok() {
                    log::info!(
                        "sent snapshot {} of {}: {} records, {} bytes",
                        sent.header.snapshot.name,
                        sent.header.container,
                        sent.totals.records,
                        sent.totals.bytes
                    );
                }
            }
            // Nothing sent yet: the handler answers with the error.
            (Err(e), Some(started)) => {
                let _ = started.send(Err(e));
            }
            (Err(e), None) => {
                log::error!("send of snapshot {what} cut short: {e}");
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
        }
    });
    match started_rx.await {
        Ok(Ok(())) => Response::builder()
            .status(StatusCode::OK)
            .header(axum::http::header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from_stream(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            ))
            .unwrap_or_else(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
            }),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the send ended without a word",
        )
        .into_response(),
    }
}

/// Reads and drops what is left of a refused stream, for at most `DRAIN_TIME` or
/// `DRAIN_BYTES`.
async fn drain(body: &mut Body) {
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len() as u64);
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    })
    .await;
}

/// How much of a refused stream is read to let its client see the answer.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const DRAIN_BYTES: u64 = 256 << 20;

/// The blocking side of a receive: reads the pieces the handler forwards from the body.
struct BodyReader {
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    piece: Bytes,
}

impl io::Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.piece.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(p)) => self.piece = p,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.piece.len());
        out[..n].copy_from_slice(&self.piece[..n]);
        let _ = self.piece.split_to(n);
        Ok(n)
    }
}

#[utoipa::path(post, path = "/api/v1/containers/{id}/receive", tag = "snapshots", params(("id" = String, Path, description = "name of the container to receive into (created by a full stream)"), ReceiveQuery), request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A snapshot stream from send"), responses((status = 200, description = "The received snapshot", body = Envelope<Received>), (status = 400, description = "A truncated, corrupted or foreign stream", body = ErrorAnswer), (status = 409, description = "The stream's base is not the container's latest snapshot, or the container is mounted", body = ErrorAnswer)))]
pub(super) async fn receive_snapshot(
    State(svc): State<Arc<Service>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReceiveQuery>,
    body: Body,
) -> ApiResult<Received> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(8);
    let work = blocking(&svc, move |s| {
        let mut r = BodyReader {
            rx,
            piece: Bytes::new(),
        };
        let got = s.receive_snapshot(&name, q.rollback, &mut r)?;
        let size = s.store().epoch_size(got.snapshot.record.epoch)?;
        let info = s.info(got.container.clone())?;
        Ok(Received {
            container: contract::Container::from(&info),
            snapshot: convert::snapshot(&got.snapshot, size),
            records: got.totals.records,
            bytes: got.totals.bytes,
            rolled_back: got.rolled_back,
        })
    });
    let feed = async move {
        let mut body = body;
        loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(Ok(data)).await.is_err() {
                            // The receive ended early (it refused the stream). Read a while
                            // more so that the client, still writing, gets to read our
                            // answer instead of a broken connection.
                            drain(&mut body).await;
                            break;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    break;
                }
                None => break,
            }
        }
    };
    let (answer, ()) = tokio::join!(work, feed);
    Ok(Answer::ok("Snapshot received successfully", answer?))
}

fn receive_state(rec: &crate::store::ReceiveRecord) -> ReceiveState {
    ReceiveState {
        snapshot: rec.snapshot.clone(),
        created_at: crate::timefmt::rfc3339(rec.created_at),
        base: rec.base.as_ref().map(|b| b.name.clone()),
        records: rec.records,
        bytes: rec.bytes,
        started: crate::timefmt::rfc3339(rec.started),
        token: rec.token().map(|t| t.encode()),
    }
}

#[utoipa::path(get, path = "/api/v1/containers/{id}/receive", tag = "snapshots", params(("id" = String, Path, description = "name of the container received into")), responses((status = 200, description = "The cut receive waiting to be resumed, with its token", body = Envelope<ReceiveState>), (status = 404, description = "None waits", body = ErrorAnswer)))]
pub(super) async fn get_receive(
    State(svc): State<Arc<Service>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<ReceiveState> {
    let rec = blocking(&svc, move |s| s.receive_state(&name)).await?;
    Ok(Answer::ok(
        "Receive waiting to be resumed",
        receive_state(&rec),
    ))
}

#[utoipa::path(delete, path = "/api/v1/containers/{id}/receive", tag = "snapshots", params(("id" = String, Path, description = "name of the container received into")), responses((status = 200, description = "The aborted receive (what it had written is reclaimed)", body = Envelope<ReceiveState>), (status = 404, description = "None waits", body = ErrorAnswer), (status = 409, description = "A receive into it is running", body = ErrorAnswer)))]
pub(super) async fn abort_receive(
    State(svc): State<Arc<Service>>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<ReceiveState> {
    let rec = blocking(&svc, move |s| s.abort_receive(&name)).await?;
    Ok(Answer::ok("Receive aborted", receive_state(&rec)))
}

#[utoipa::path(get, path = "/api/v1/transfers", tag = "snapshots", responses((status = 200, description = "The snapshot streams being sent and received, with their progress", body = Envelope<contract::TransferList>)))]
pub(super) async fn list_transfers(
    State(svc): State<Arc<Service>>,
) -> ApiResult<contract::TransferList> {
    let transfers = svc
        .transfers()
        .iter()
        .map(|t| {
            let (done, total) = t.transfer_progress();
            contract::Transfer {
                id: t.id,
                direction: match t.direction {
                    crate::service::transfers::Direction::Send => "send",
                    crate::service::transfers::Direction::Receive => "receive",
                }
                .to_string(),
                container: t.container.clone(),
                snapshot: (!t.snapshot.is_empty()).then(|| t.snapshot.clone()),
                started: crate::timefmt::rfc3339(t.started),
                done_bytes: done,
                total_bytes: total,
                percent: if total == 0 {
                    0.0
                } else {
                    (done as f64 * 100.0 / total as f64).min(100.0)
                },
            }
        })
        .collect();
    Ok(Answer::ok(
        "Transfers",
        contract::TransferList { transfers },
    ))
}
