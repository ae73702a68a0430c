//! Opening a `replication=database` session: startup, authentication (trust,
//! cleartext, MD5, SCRAM-SHA-256), and the simple-query commands
//! `IDENTIFY_SYSTEM` and `START_REPLICATION`.

use std::fmt;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::{Host, SslMode};

use super::stream::ReplicationStream;
use super::ReplicationError;
use crate::pg::Lsn;
use crate::pg::PgUrl;

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

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_pos: Lsn,
}

/// Asks for TLS as `sslmode` says: `prefer` falls back to plain text when the
/// server declines, `require` fails. Unix sockets never use TLS, as with libpq.
async fn negotiate_tls(
    mut stream: tokio::net::TcpStream,
    host: &str,
    mode: SslMode,
    endpoint: &str,
) -> Result<Box<dyn Io>, ReplicationError> {
    if mode == SslMode::Disable {
        return Ok(Box::new(stream));
    }
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await?;
    let answer = stream.read_u8().await?;
    if answer != b'S' {
        return match mode {
            SslMode::Require => Err(ReplicationError::TlsRefused(endpoint.to_owned())),
            _ => Ok(Box::new(stream)),
        };
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
        ReplicationError::Protocol(format!("{host:?} is not a valid TLS server name: {e}"))
    })?;
    let tls = tokio_rustls::TlsConnector::from(crate::pg::tls::client_config())
        .connect(name, stream)
        .await?;
    Ok(Box::new(tls))
}

/// A backend message as this client needs it: CopyData and CopyBothResponse
/// are handled here because `postgres-protocol` does not parse the latter.
pub(crate) enum Incoming {
    CopyData(bytes::Bytes),
    CopyBothResponse,
    Other(backend::Message),
}

/// An authenticated replication session, ready for commands.
pub struct ReplicationConnection {
    io: Box<dyn Io>,
    read: BytesMut,
    write: BytesMut,
    /// Bytes the last socket read returned (usize::MAX when it filled the
    /// buffer): small reads mean a trickle.
    last_read: usize,
}

impl ReplicationConnection {
    /// Connects and authenticates. The session's output settings are pinned
    /// because wal2json prints values with them.
    pub async fn connect(url: &PgUrl, application_name: &str) -> Result<Self, ReplicationError> {
        let config = url.config();
        let endpoint = url.endpoint();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let connect_err = |source| ReplicationError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let timeout = config
            .get_connect_timeout()
            .copied()
            .unwrap_or(std::time::Duration::from_secs(10));
        let io: Box<dyn Io> = match config.get_hosts().first() {
            Some(Host::Tcp(host)) => {
                let stream = tokio::time::timeout(
                    timeout,
                    tokio::net::TcpStream::connect((host.as_str(), port)),
                )
                .await
                .map_err(|_| {
                    connect_err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "timed out",
                    ))
                })?
                .map_err(connect_err)?;
                let _ = stream.set_nodelay(true);
                negotiate_tls(stream, host, config.get_ssl_mode(), &endpoint).await?
            }
            Some(Host::Unix(dir)) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                Box::new(
                    tokio::net::UnixStream::connect(path)
                        .await
                        .map_err(connect_err)?,
                )
            }
            None => return Err(connect_err(std::io::Error::other("no host in source.url"))),
        };
        let mut conn = ReplicationConnection {
            io,
            read: BytesMut::with_capacity(256 * 1024),
            write: BytesMut::new(),
            last_read: 0,
        };
        let user = url.user().to_owned();
        let options = "-c DateStyle=ISO -c TimeZone=UTC -c bytea_output=hex -c IntervalStyle=postgres -c extra_float_digits=3";
        let params = [
            ("user", user.as_str()),
            ("database", url.dbname()),
            ("replication", "database"),
            ("application_name", application_name),
            ("client_encoding", "UTF8"),
            ("options", options),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.write)?;
        conn.flush().await?;
        conn.authenticate(&user, config.get_password(), &endpoint)
            .await?;
        // ParameterStatus and BackendKeyData until ReadyForQuery.
        loop {
            match conn.read_message().await? {
                Incoming::Other(backend::Message::ReadyForQuery(_)) => break,
                Incoming::Other(backend::Message::ErrorResponse(body)) => {
                    return Err(ReplicationError::Server(server_error(body.fields())))
                }
                _ => {}
            }
        }
        Ok(conn)
    }

    async fn authenticate(
        &mut self,
        user: &str,
        password: Option<&[u8]>,
        endpoint: &str,
    ) -> Result<(), ReplicationError> {
        let need_password = || {
            ReplicationError::Auth {
            endpoint: endpoint.to_owned(),
            reason: "the server asks for a password; put it in source.url or in the PGPASSWORD environment variable".into(),
        }
        };
        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            match self.read_message().await? {
                Incoming::Other(backend::Message::AuthenticationOk) => return Ok(()),
                Incoming::Other(backend::Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password.ok_or_else(need_password)?, &mut self.write)?;
                }
                Incoming::Other(backend::Message::AuthenticationMd5Password(body)) => {
                    let hash = md5_hash(user.as_bytes(), password.ok_or_else(need_password)?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.write)?;
                }
                Incoming::Other(backend::Message::AuthenticationSasl(body)) => {
                    let mut mechanisms = body.mechanisms();
                    let mut has_scram = false;
                    while let Some(m) = mechanisms.next().map_err(ReplicationError::Io)? {
                        has_scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !has_scram {
                        return Err(ReplicationError::Auth {
                            endpoint: endpoint.to_owned(),
                            reason: "the server offers no SASL mechanism pgtrail supports (SCRAM-SHA-256)".into(),
                        });
                    }
                    let s = sasl::ScramSha256::new(password.ok_or_else(need_password)?, sasl::ChannelBinding::unsupported());
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), &mut self.write)?;
                    scram = Some(s);
                }
                Incoming::Other(backend::Message::AuthenticationSaslContinue(body)) => {
                    let s = scram.as_mut().ok_or_else(|| ReplicationError::Protocol("SASL continue without SASL start".into()))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), &mut self.write)?;
                }
                Incoming::Other(backend::Message::AuthenticationSaslFinal(body)) => {
                    let mut s = scram.take().ok_or_else(|| ReplicationError::Protocol("SASL final without SASL start".into()))?;
                    s.finish(body.data()).map_err(|e| ReplicationError::Auth {
                        endpoint: endpoint.to_owned(),
                        reason: format!("the server's SCRAM signature did not verify: {e}"),
                    })?;
                    continue;
                }
                Incoming::Other(backend::Message::ErrorResponse(body)) => {
                    let e = server_error(body.fields());
                    // 28P01 invalid_password, 28000 invalid_authorization_specification (pg_hba).
                    return Err(if e.code.starts_with("28") {
                        ReplicationError::Auth { endpoint: endpoint.to_owned(), reason: e.message }
                    } else {
                        ReplicationError::Server(e)
                    });
                }
                _ => {
                    return Err(ReplicationError::Auth {
                        endpoint: endpoint.to_owned(),
                        reason: "the server asks for an authentication method pgtrail does not support (use scram-sha-256, md5, password or trust)".into(),
                    })
                }
            }
            self.flush().await?;
        }
    }

    /// Runs one simple-query command and returns its rows as text.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(sql, &mut self.write)?;
        self.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.read_message().await? {
                Incoming::Other(backend::Message::DataRow(body)) => {
                    let buf = body.buffer();
                    let mut row = Vec::new();
                    let mut ranges = body.ranges();
                    while let Some(range) = ranges.next()? {
                        row.push(range.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()));
                    }
                    rows.push(row);
                }
                Incoming::Other(backend::Message::ErrorResponse(body)) => {
                    error = Some(server_error(body.fields()))
                }
                Incoming::Other(backend::Message::ReadyForQuery(_)) => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(ReplicationError::Server(e)),
            None => Ok(rows),
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemIdentity, ReplicationError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = rows
            .first()
            .ok_or_else(|| ReplicationError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(SystemIdentity {
            system_id: field(0),
            timeline: field(1).parse().map_err(|_| {
                ReplicationError::Protocol("bad timeline in IDENTIFY_SYSTEM".into())
            })?,
            xlog_pos: field(2)
                .parse()
                .map_err(|e| ReplicationError::Protocol(format!("IDENTIFY_SYSTEM: {e}")))?,
        })
    }

    /// Starts logical replication from `start` with the given plugin options
    /// and hands the connection over to the stream.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, String)],
    ) -> Result<ReplicationStream, ReplicationError> {
        // Option names are double-quoted (they contain hyphens); values are
        // plain single-quoted literals: the replication grammar rejects E'...'.
        let options: Vec<String> = options
            .iter()
            .map(|(k, v)| format!("\"{}\" '{}'", k.replace('"', "\"\""), v.replace('\'', "''")))
            .collect();
        let sql = format!(
            "START_REPLICATION SLOT \"{slot}\" LOGICAL {start} ({})",
            options.join(", ")
        );
        frontend::query(&sql, &mut self.write)?;
        self.flush().await?;
        loop {
            match self.read_message().await? {
                Incoming::CopyBothResponse => return Ok(ReplicationStream::new(self)),
                Incoming::Other(backend::Message::ErrorResponse(body)) => {
                    let e = server_error(body.fields());
                    return Err(ReplicationError::Server(e));
                }
                Incoming::Other(backend::Message::NoticeResponse(body)) => {
                    let n = server_error(body.fields());
                    tracing::warn!(message = %n.message, "notice from the source database");
                }
                _ => {}
            }
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
