//! Opening an ordinary (non-replication) connection to the source or the
//! store, and rendering its errors with the server's own words.

use tokio_postgres::Client;

use super::PgUrl;

/// Opens an ordinary connection; the connection task runs in the background.
pub async fn connect(url: &PgUrl, application_name: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config = url.config();
    config.application_name(application_name);
    let (client, connection) = config.connect(url.tls().make_connect()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// Renders a connection error with the server's own message when it sent one
/// (tokio-postgres' Display only says "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.hint() {
            Some(hint) => format!("{} (hint: {hint})", db.message()),
            None => db.message().to_owned(),
        },
        None if super::tls::refusal_in(e).is_some() => {
            super::tls::refusal_in(e).unwrap_or_default()
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                // Most errors' messages already end with their source's.
                let more = s.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                source = s.source();
            }
            if text.contains("password missing") {
                text.push_str(
                    " (the server asks for a password: give it in the URL, in the service, in \
                     PGPASSWORD, or on a host:port:database:user:password line of the password \
                     file, ~/.pgpass or PGPASSFILE, with mode 0600)",
                );
            }
            if text.contains("did not use channel binding") {
                text.push_str(
                    " (channel_binding=require needs TLS, sslmode=verify-full or require, \
                     and scram-sha-256 for this role in pg_hba.conf)",
                );
            }
            text
        }
    }
}
