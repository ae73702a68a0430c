//! Opening a `replication=database` session: TLS as the URL's `sslmode` says,
//! authentication (trust, cleartext, MD5, SCRAM-SHA-256, and
//! SCRAM-SHA-256-PLUS with channel binding over TLS), and the simple-query commands
//! `IDENTIFY_SYSTEM` and `START_REPLICATION`.

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::{ChannelBinding, Host};

use super::stream::ReplicationStream;
use super::wire::{server_error, Incoming, Io, Wire};
use super::ReplicationError;
use crate::pg::tls::{Tls, TlsMode};
use crate::pg::Lsn;
use crate::pg::PgUrl;

/// What `IDENTIFY_SYSTEM` reports.
#[derive(Debug, Clone)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    pub xlog_pos: Lsn,
}

/// The session's transport, and the TLS channel binding data when it is TLS.
struct Transport {
    io: Box<dyn Io>,
    /// `tls-server-end-point` for SCRAM-SHA-256-PLUS; None without TLS (or
    /// for a certificate whose signature algorithm has no single hash).
    binding: Option<Vec<u8>>,
}

/// Asks for TLS as `sslmode` says: `allow` and `prefer` fall back to plain
/// text when the server declines, the others fail. The certificate is checked
/// by the URL's verifier; a refusal is final (retrying cannot fix it).
async fn negotiate_tls(
    mut stream: tokio::net::TcpStream,
    host: &str,
    tls: &Tls,
    endpoint: &str,
) -> Result<Transport, ReplicationError> {
    let plain = |stream| Transport {
        io: Box::new(stream),
        binding: None,
    };
    if tls.mode() == TlsMode::Disable {
        return Ok(plain(stream));
    }
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    stream.write_all(&request).await?;
    let answer = stream.read_u8().await?;
    if answer != b'S' {
        return match tls.mode().requires_tls() {
            true => Err(ReplicationError::TlsRefused(endpoint.to_owned())),
            false => Ok(plain(stream)),
        };
    }
    let tls_error = |reason: String| ReplicationError::Tls {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| tls_error(format!("{host:?} is not a valid TLS server name: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls.client_config())
        .connect(name, stream)
        .await
        .map_err(|e| {
            // rustls' own refusals (the certificate, the protocol) are final;
            // anything else is the network, worth another try.
            match e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                Some(refusal) => {
                    tls_error(crate::pg::tls::refusal_in(&e).unwrap_or_else(|| refusal.to_string()))
                }
                None => ReplicationError::Io(e),
            }
        })?;
    let binding = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| crate::pg::tls::tls_server_end_point(cert));
    Ok(Transport {
        io: Box::new(stream),
        binding,
    })
}

/// The SCRAM mechanism and channel binding to use, as libpq chooses them:
/// SCRAM-SHA-256-PLUS over TLS when the server offers it (unless
/// `channel_binding=disable`); `channel_binding=require` accepts nothing else.
fn choose_scram(
    offered: &[String],
    binding: Option<&Vec<u8>>,
    setting: ChannelBinding,
    endpoint: &str,
) -> Result<(sasl::ChannelBinding, &'static str), ReplicationError> {
    let has_plus = offered.iter().any(|m| m == sasl::SCRAM_SHA_256_PLUS);
    let has_scram = offered.iter().any(|m| m == sasl::SCRAM_SHA_256);
    let binding = binding.filter(|_| setting != ChannelBinding::Disable);
    let (binding, mechanism) = match (has_plus, binding) {
        (true, Some(data)) => (
            sasl::ChannelBinding::tls_server_end_point(data.clone()),
            sasl::SCRAM_SHA_256_PLUS,
        ),
        // "y": we could bind, but the server did not offer it (a server that
        // did would know its offer was stripped on the way).
        (false, Some(_)) => (sasl::ChannelBinding::unrequested(), sasl::SCRAM_SHA_256),
        (_, None) => (sasl::ChannelBinding::unsupported(), sasl::SCRAM_SHA_256),
    };
    if mechanism != sasl::SCRAM_SHA_256_PLUS {
        check_binding_optional(setting, endpoint)?;
        if !has_scram {
            return Err(ReplicationError::Auth {
                endpoint: endpoint.to_owned(),
                reason: format!(
                    "the server offers no SASL mechanism pgtrail supports here (SCRAM-SHA-256; offered: {})",
                    offered.join(", ")
                ),
            });
        }
    }
    Ok((binding, mechanism))
}

/// With `channel_binding=require`, a login without SCRAM-SHA-256-PLUS is refused.
fn check_binding_optional(setting: ChannelBinding, endpoint: &str) -> Result<(), ReplicationError> {
    if setting == ChannelBinding::Require {
        return Err(ReplicationError::Auth {
            endpoint: endpoint.to_owned(),
            reason: "source.url has channel_binding=require, but the server did not use channel \
                     binding: that needs TLS (sslmode=verify-full or require) and scram-sha-256 \
                     for this role in pg_hba.conf"
                .into(),
        });
    }
    Ok(())
}

/// What a login needs: the credentials, and the channel binding it may or must use.
struct Login<'a> {
    user: &'a str,
    password: Option<&'a [u8]>,
    binding: Option<&'a Vec<u8>>,
    setting: ChannelBinding,
    endpoint: &'a str,
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
        let transport = match config.get_hosts().first() {
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
                negotiate_tls(stream, host, url.tls(), &endpoint).await?
            }
            Some(Host::Unix(dir)) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?;
                Transport {
                    io: Box::new(stream),
                    binding: None,
                }
            }
            None => return Err(connect_err(std::io::Error::other("no host in source.url"))),
        };
        let mut wire = Wire::new(transport.io);
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
        let login = Login {
            user: &user,
            password: config.get_password(),
            binding: transport.binding.as_ref(),
            setting: config.get_channel_binding(),
            endpoint: &endpoint,
        };
        conn.authenticate(&login).await?;
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

    async fn authenticate(&mut self, login: &Login<'_>) -> Result<(), ReplicationError> {
        let endpoint = login.endpoint;
        let need_password = || {
            ReplicationError::Auth {
            endpoint: endpoint.to_owned(),
            reason: "the server asks for a password; give it in source.url, in its service, in PGPASSWORD, or on a line of the password file (~/.pgpass or PGPASSFILE, mode 0600)".into(),
        }
        };
        let password = login.password;
        let mut scram: Option<sasl::ScramSha256> = None;
        // Whether the login is bound to this TLS channel (SCRAM-SHA-256-PLUS).
        let mut bound = false;
        loop {
            match self.wire.read_message().await? {
                Incoming::Other(backend::Message::AuthenticationOk) => {
                    if !bound {
                        check_binding_optional(login.setting, endpoint)?;
                    }
                    return Ok(());
                }
                Incoming::Other(backend::Message::AuthenticationCleartextPassword) => {
                    check_binding_optional(login.setting, endpoint)?;
                    frontend::password_message(password.ok_or_else(need_password)?, self.wire.write_buf())?;
                }
                Incoming::Other(backend::Message::AuthenticationMd5Password(body)) => {
                    check_binding_optional(login.setting, endpoint)?;
                    let hash = md5_hash(login.user.as_bytes(), password.ok_or_else(need_password)?, body.salt());
                    frontend::password_message(hash.as_bytes(), self.wire.write_buf())?;
                }
                Incoming::Other(backend::Message::AuthenticationSasl(body)) => {
                    let offered: Vec<String> = body.mechanisms().map(|m| Ok(m.to_owned())).collect().map_err(ReplicationError::Io)?;
                    let (binding, mechanism) = choose_scram(&offered, login.binding, login.setting, endpoint)?;
                    bound = mechanism == sasl::SCRAM_SHA_256_PLUS;
                    let s = sasl::ScramSha256::new(password.ok_or_else(need_password)?, binding);
                    frontend::sasl_initial_response(mechanism, s.message(), self.wire.write_buf())?;
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
