//! Opening a `replication=database` session: startup, authentication (trust,
//! cleartext, MD5, SCRAM-SHA-256), and the simple-query commands
//! `IDENTIFY_SYSTEM` and `START_REPLICATION`.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::{Host, SslMode};

use super::stream::ReplicationStream;
use super::wire::{server_error, Incoming, Io, Wire};
use super::ReplicationError;
use crate::pg::Lsn;
use crate::pg::PgUrl;

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

/// An authenticated replication session, ready for commands.
pub struct ReplicationConnection {
    wire: Wire,
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
        let mut wire = Wire::new(io);
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
        frontend::startup_message(params.iter().copied(), wire.write_buf())?;
        wire.flush().await?;
        let mut conn = ReplicationConnection { wire };
        conn.authenticate(&user, config.get_password(), &endpoint)
            .await?;
        // ParameterStatus and BackendKeyData until ReadyForQuery.
        loop {
            match conn.wire.read_message().await? {
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
            match self.wire.read_message().await? {
                Incoming::Other(backend::Message::AuthenticationOk) => return Ok(()),
                Incoming::Other(backend::Message::AuthenticationCleartextPassword) => {
                    frontend::password_message(password.ok_or_else(need_password)?, self.wire.write_buf())?;
                }
                Incoming::Other(backend::Message::AuthenticationMd5Password(body)) => {
                    let hash = md5_hash(user.as_bytes(), password.ok_or_else(need_password)?, body.salt());
                    frontend::password_message(hash.as_bytes(), self.wire.write_buf())?;
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
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, s.message(), self.wire.write_buf())?;
                    scram = Some(s);
                }
                Incoming::Other(backend::Message::AuthenticationSaslContinue(body)) => {
                    let s = scram.as_mut().ok_or_else(|| ReplicationError::Protocol("SASL continue without SASL start".into()))?;
                    s.update(body.data())?;
                    frontend::sasl_response(s.message(), self.wire.write_buf())?;
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
            self.wire.flush().await?;
        }
    }

    /// Runs one simple-query command and returns its rows as text.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ReplicationError> {
        frontend::query(sql, self.wire.write_buf())?;
        self.wire.flush().await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            match self.wire.read_message().await? {
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
        frontend::query(&sql, self.wire.write_buf())?;
        self.wire.flush().await?;
        loop {
            match self.wire.read_message().await? {
                Incoming::CopyBothResponse => return Ok(ReplicationStream::new(self.wire)),
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
}
