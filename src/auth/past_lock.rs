//! Signing in to a locked account from a client that had no part in locking
//! it. The lockout ([`super::users::settle`]) counts every failure of the
//! account, so a stranger who guesses wrong a few times locks its owner out
//! too. The web view therefore checks the password of a locked account for a
//! client it knows has not failed to sign in as that account lately (see
//! `web::throttle`): a right password signs in, and the lock stays for
//! everyone else; a wrong one counts nothing more against the account (it is
//! locked already) but is remembered against that client.

use tokio_postgres::GenericClient;

use super::users::{self, SignIn};
use super::{password, AuthError};

/// An account that is locked now, not disabled, and its password hash.
#[derive(Debug)]
pub struct Locked {
    name: String,
    hash: String,
}

/// The account `name` if it exists, is enabled and is locked now.
pub async fn locked<C: GenericClient>(client: &C, name: &str) -> Result<Option<Locked>, AuthError> {
    let row = client
        .query_opt(
            "SELECT name, password_hash FROM pgtrail.users \
             WHERE name = $1 AND NOT disabled AND locked_until > now()",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| Locked {
        name: r.get(0),
        hash: r.get(1),
    }))
}

impl Locked {
    /// Whether `given` is the password: one argon2 verification, on a
    /// blocking thread, as every sign-in spends.
    pub async fn verify(&self, given: &str) -> Result<bool, AuthError> {
        let hash = self.hash.clone();
        let given = given.to_owned();
        tokio::task::spawn_blocking(move || password::verify(&hash, &given))
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))
    }

    /// The outcome of the check: with the right password, the user as stored
    /// now (unless disabled meanwhile); the lock and the failure count stay.
    pub async fn settle<C: GenericClient>(
        &self,
        client: &C,
        password_ok: bool,
    ) -> Result<SignIn, AuthError> {
        let refused = SignIn::Failed {
            locked_now: false,
            locked: true,
        };
        if !password_ok {
            return Ok(refused);
        }
        Ok(match users::get(client, &self.name).await? {
            Some(user) if !user.disabled => SignIn::Ok(user),
            _ => refused,
        })
    }
}
