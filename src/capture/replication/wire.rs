//! The wire under a replication session: a socket (plain, TLS or Unix), its
//! read and write buffers, and backend messages framed as this client needs
//! them. Both the command phase (the connection) and the CopyBoth phase (the
//! stream) speak through it; it knows neither.

use std::fmt;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::ReplicationError;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An ErrorResponse from the server.
#[derive(Debug, Clone)]
pub struct ServerError {
    pub severity: String,
    /// SQLSTATE, e.g. `55006` (object in use).
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the source database says: {}: {} (SQLSTATE {})",
            self.severity, self.message, self.code
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

pub(crate) fn server_error(fields: backend::ErrorFields<'_>) -> ServerError {
    let mut e = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        hint: None,
    };
    let mut fields = fields;
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'S' => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'H' => e.hint = Some(value),
            _ => {}
        }
    }
    e
}

/// A backend message as this client needs it: CopyData and CopyBothResponse
/// are handled here because `postgres-protocol` does not parse the latter.
pub(crate) enum Incoming {
    CopyData(bytes::Bytes),
    CopyBothResponse,
    Other(backend::Message),
}

/// The socket and its buffers.
pub(crate) struct Wire {
    io: Box<dyn Io>,
    read: BytesMut,
    write: BytesMut,
    /// Bytes the last socket read returned (usize::MAX when it filled the
    /// buffer): small reads mean a trickle.
    last_read: usize,
}

impl Wire {
    pub(crate) fn new(io: Box<dyn Io>) -> Self {
        Wire {
            io,
            read: BytesMut::with_capacity(256 * 1024),
            write: BytesMut::new(),
            last_read: 0,
        }
    }

    /// True when a whole message is already buffered, so reading it will not wait on the network.
    pub(crate) fn message_buffered(&self) -> bool {
        match backend::Header::parse(&self.read) {
            Ok(Some(h)) => self.read.len() > h.len() as usize,
            _ => false,
        }
    }

    /// Bytes the last read from the socket returned.
    pub(crate) fn last_read(&self) -> usize {
        self.last_read
    }

    pub(crate) fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ReplicationError> {
        if !self.write.is_empty() {
            self.io.write_all(&self.write).await?;
            self.io.flush().await?;
            self.write.clear();
        }
        Ok(())
    }

    /// Sends Terminate and closes the socket.
    pub(crate) async fn terminate(mut self) -> Result<(), ReplicationError> {
        frontend::terminate(&mut self.write);
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    /// Reads the next backend message, waiting for more bytes as needed.
    pub(crate) async fn read_message(&mut self) -> Result<Incoming, ReplicationError> {
        loop {
            if let Some(header) = backend::Header::parse(&self.read)? {
                let len = header.len() as usize + 1;
                if self.read.len() >= len {
                    match header.tag() {
                        b'd' => {
                            let mut frame = self.read.split_to(len);
                            frame.advance(5);
                            return Ok(Incoming::CopyData(frame.freeze()));
                        }
                        b'W' => {
                            self.read.advance(len);
                            return Ok(Incoming::CopyBothResponse);
                        }
                        _ => {
                            let message =
                                backend::Message::parse(&mut self.read)?.ok_or_else(|| {
                                    ReplicationError::Protocol("incomplete message".into())
                                })?;
                            return Ok(Incoming::Other(message));
                        }
                    }
                }
                self.read.reserve(len - self.read.len());
            } else {
                self.read.reserve(64 * 1024);
            }
            if self.read.capacity() - self.read.len() < 16 * 1024 {
                self.read.reserve(64 * 1024);
            }
            let offered = self.read.capacity() - self.read.len();
            let n = self.io.read_buf(&mut self.read).await?;
            if n == 0 {
                return Err(ReplicationError::Closed);
            }
            // A read that took all the room it was offered says nothing about
            // the pace: more may be waiting. Count it as a big one.
            let mut full = n >= offered;
            // A TLS stream hands over one record (16 KiB at most) per read
            // however much is waiting: take what is there already before
            // judging the pace, or a backlog over TLS would look like a
            // trickle. (`read_buf` loses nothing when dropped unfinished.)
            let mut got = n;
            while !full {
                let room = self.read.capacity() - self.read.len();
                if room == 0 {
                    full = true;
                    break;
                }
                match futures_util::FutureExt::now_or_never(self.io.read_buf(&mut self.read)) {
                    Some(Ok(0)) | None => break,
                    Some(Ok(m)) => {
                        got += m;
                        full = m >= room;
                    }
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            self.last_read = if full { usize::MAX } else { got };
        }
    }
}
