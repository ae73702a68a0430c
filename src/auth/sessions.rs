//! Browser sessions: a random token in the cookie, its SHA-256 in the store,
//! a synchronizer CSRF token per session, and two expiries: idle (since the
//! last request) and absolute (since sign-in). A request on an expired
//! session finds nothing; expired rows are swept at each sign-in and by the
//! web server every few minutes ([`sweep`]).
//!
//! A request writes the session's `last_seen` only when the stored one is
//! older than [`Timeouts::touch_every`] (a minute, less for short idle
//! limits): checking a session is a read, and a busy user does not turn every
//! page into a row update.

use tokio_postgres::GenericClient;

use super::{random_secret, secret_hash, AuthError, Role, Tables};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub idle_seconds: u64,
    pub absolute_seconds: u64,
}

impl Timeouts {
    /// How stale `last_seen` may get before a request writes it again: a
    /// minute, or a tenth of the idle limit when that is shorter, so a
    /// session never expires more than a tenth early.
    pub fn touch_every(self) -> f64 {
        (self.idle_seconds as f64 / 10.0).min(60.0)
    }
}

/// The user behind a valid session, as the store says now (a role change or
/// a disable takes effect on the next request).
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub name: String,
    pub role: Role,
    pub tables: Tables,
    pub csrf: String,
}

/// Starts a session; returns the cookie's token and the session's CSRF token.
pub async fn create<C: GenericClient>(
    client: &C,
    user: &str,
    client_addr: Option<String>,
    timeouts: Timeouts,
) -> Result<(String, String), AuthError> {
    sweep(client, timeouts).await?;
    let token = random_secret()?;
    let csrf = random_secret()?;
    client
        .execute(
            "INSERT INTO pgtrail.sessions (token_hash, user_name, csrf, client_addr) VALUES ($1, $2, $3, $4)",
            &[&secret_hash(&token), &user, &csrf, &client_addr],
        )
        .await?;
    Ok((token, csrf))
}

/// Deletes the expired sessions; returns how many.
pub async fn sweep<C: GenericClient>(client: &C, timeouts: Timeouts) -> Result<u64, AuthError> {
    Ok(client
        .execute(
            "DELETE FROM pgtrail.sessions WHERE last_seen < now() - make_interval(secs => $1) \
                 OR created_at < now() - make_interval(secs => $2)",
            &[
                &(timeouts.idle_seconds as f64),
                &(timeouts.absolute_seconds as f64),
            ],
        )
        .await?)
}

/// The session's user if the token is valid, not expired, and the user not
/// disabled; marks the session as used now (in the store at most every
/// [`Timeouts::touch_every`] seconds).
pub async fn validate<C: GenericClient>(
    client: &C,
    token: &str,
    timeouts: Timeouts,
) -> Result<Option<SessionUser>, AuthError> {
    find(client, token, timeouts, true).await
}

/// As [`validate`], without marking the session as used: for a long-lived
/// response (the live stream) checking that its session still holds, which
/// must not keep an idle session alive.
pub async fn peek<C: GenericClient>(
    client: &C,
    token: &str,
    timeouts: Timeouts,
) -> Result<Option<SessionUser>, AuthError> {
    find(client, token, timeouts, false).await
}

async fn find<C: GenericClient>(
    client: &C,
    token: &str,
    timeouts: Timeouts,
    touch: bool,
) -> Result<Option<SessionUser>, AuthError> {
    // The same conditions either way; only the UPDATE of last_seen differs.
    const VALID: &str = "s.token_hash = $1 AND u.name = s.user_name AND NOT u.disabled \
               AND s.last_seen >= now() - make_interval(secs => $2) \
               AND s.created_at >= now() - make_interval(secs => $3)";
    let params = (
        secret_hash(token),
        timeouts.idle_seconds as f64,
        timeouts.absolute_seconds as f64,
    );
    let row = if touch {
        // One round trip; the UPDATE in the WITH runs whether or not the
        // outer query reads it, and writes nothing while last_seen is recent.
        let sql = format!(
            "WITH found AS (SELECT u.name, u.role, u.tables, s.csrf, s.last_seen \
                            FROM pgtrail.sessions s, pgtrail.users u WHERE {VALID}), \
                  touched AS (UPDATE pgtrail.sessions SET last_seen = now() \
                              WHERE token_hash = $1 \
                                AND EXISTS (SELECT 1 FROM found \
                                            WHERE found.last_seen < now() - make_interval(secs => $4))) \
             SELECT name, role, tables, csrf FROM found"
        );
        client
            .query_opt(
                &sql,
                &[&params.0, &params.1, &params.2, &timeouts.touch_every()],
            )
            .await?
    } else {
        let sql = format!(
            "SELECT u.name, u.role, u.tables, s.csrf FROM pgtrail.sessions s, pgtrail.users u WHERE {VALID}"
        );
        client
            .query_opt(&sql, &[&params.0, &params.1, &params.2])
            .await?
    };
    let Some(row) = row else { return Ok(None) };
    Ok(Some(SessionUser {
        name: row.get(0),
        role: row.get::<_, String>(1).parse()?,
        tables: Tables::from_stored(row.get(2))?,
        csrf: row.get(3),
    }))
}

/// Ends one session; returns its user if there was one.
pub async fn end<C: GenericClient>(client: &C, token: &str) -> Result<Option<String>, AuthError> {
    Ok(client
        .query_opt(
            "DELETE FROM pgtrail.sessions WHERE token_hash = $1 RETURNING user_name",
            &[&secret_hash(token)],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Ends every session of `user`; returns how many.
pub async fn end_all<C: GenericClient>(client: &C, user: &str) -> Result<u64, AuthError> {
    Ok(client
        .execute(
            "DELETE FROM pgtrail.sessions WHERE user_name = $1",
            &[&user],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_written_at_most_once_a_minute_and_well_within_the_idle_limit() {
        let t = |idle| Timeouts {
            idle_seconds: idle,
            absolute_seconds: 43_200,
        };
        assert_eq!(t(1800).touch_every(), 60.0);
        assert_eq!(t(600).touch_every(), 60.0);
        assert_eq!(t(300).touch_every(), 30.0);
        assert_eq!(t(2).touch_every(), 0.2);
    }
}
