//! The CopyBoth phase of a replication session: XLogData and keepalives from
//! the server, standby status updates back to it.
//!
//! Only the `flush` position of a status update advances a logical slot, and
//! the caller decides what it may be: this module just frames the messages.

use bytes::{Buf, BufMut, Bytes};
use postgres_protocol::message::{backend, frontend};

use super::wire::{server_error, Incoming, Wire};
use super::ReplicationError;
use crate::pg::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

#[derive(Debug)]
pub enum StreamMessage {
    /// One wal2json record, which starts at `wal_start`; `wal_end` is how far the server has sent.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        data: Bytes,
    },
    /// The server's position; when `reply_requested`, answer at once or be disconnected.
    Keepalive { wal_end: Lsn, reply_requested: bool },
}

/// A socket read smaller than this means the server is sending as changes
/// are committed, not draining a backlog (which fills reads of 64 KiB and more).
const TRICKLE_READ_BYTES: usize = 32 * 1024;

pub struct ReplicationStream {
    wire: Wire,
}

impl ReplicationStream {
    /// Takes over the wire once the server has entered CopyBoth mode.
    pub(super) fn new(wire: Wire) -> Self {
        ReplicationStream { wire }
    }

    /// The next message. Cancel-safe: no bytes are lost if the future is dropped.
    pub async fn next(&mut self) -> Result<StreamMessage, ReplicationError> {
        loop {
            match self.wire.read_message().await? {
                Incoming::CopyData(mut body) => {
                    if body.is_empty() {
                        return Err(ReplicationError::Protocol("empty CopyData".into()));
                    }
                    let kind = body.get_u8();
                    match kind {
                        b'w' if body.len() >= 24 => {
                            let wal_start = Lsn(body.get_u64());
                            let wal_end = Lsn(body.get_u64());
                            let _send_time = body.get_i64();
                            return Ok(StreamMessage::XLogData {
                                wal_start,
                                wal_end,
                                data: body,
                            });
                        }
                        b'k' if body.len() >= 17 => {
                            let wal_end = Lsn(body.get_u64());
                            let _send_time = body.get_i64();
                            let reply_requested = body.get_u8() == 1;
                            return Ok(StreamMessage::Keepalive {
                                wal_end,
                                reply_requested,
                            });
                        }
                        other => {
                            return Err(ReplicationError::Protocol(format!(
                                "unknown CopyData message {:?}",
                                other as char
                            )))
                        }
                    }
                }
                Incoming::Other(backend::Message::ErrorResponse(body)) => {
                    return Err(ReplicationError::Server(server_error(body.fields())));
                }
                Incoming::Other(backend::Message::CopyDone) => {
                    return Err(ReplicationError::Closed)
                }
                Incoming::Other(_) | Incoming::CopyBothResponse => {}
            }
        }
    }

    /// True when the next message is already buffered: `next` will not wait.
    pub fn message_buffered(&self) -> bool {
        self.wire.message_buffered()
    }

    /// True when the last read from the socket was small: changes arrive one
    /// transaction at a time rather than as a backlog.
    pub fn trickling(&self) -> bool {
        self.wire.last_read() < TRICKLE_READ_BYTES
    }

    /// Sends a standby status update. `flushed` is what the slot may advance to.
    pub async fn send_status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
    ) -> Result<(), ReplicationError> {
        self.status(written, flushed, false).await
    }

    /// Sends a standby status update that asks the server to answer at once
    /// (with a keepalive): a server that does not is unreachable.
    pub async fn ping(&mut self, written: Lsn, flushed: Lsn) -> Result<(), ReplicationError> {
        self.status(written, flushed, true).await
    }

    async fn status(
        &mut self,
        written: Lsn,
        flushed: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let now = chrono::Utc::now().timestamp_micros() - PG_EPOCH_OFFSET_MICROS;
        let mut payload = Vec::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(written.0);
        payload.put_u64(flushed.0);
        payload.put_u64(flushed.0);
        payload.put_i64(now);
        payload.put_u8(u8::from(reply_requested));
        frontend::CopyData::new(&payload[..])?.write(self.wire.write_buf());
        self.wire.flush().await
    }

    /// Ends replication politely: a last status update, CopyDone, Terminate.
    pub async fn finish(mut self, written: Lsn, flushed: Lsn) -> Result<(), ReplicationError> {
        self.send_status(written, flushed).await?;
        frontend::copy_done(self.wire.write_buf());
        self.wire.flush().await?;
        // Drain until the server acknowledges, but don't wait for long.
        let drain = async {
            loop {
                match self.wire.read_message().await {
                    Ok(Incoming::Other(backend::Message::ReadyForQuery(_))) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        self.wire.terminate().await
    }
}
