//! Who may read the audit log: pgtrail users with roles and optional table
//! restrictions, their passwords (argon2id), browser sessions and API tokens,
//! all kept in the store (`sql/store/0004_users.sql`).
//!
//! The CLI (`pgtrail user …`, `pgtrail token …`) and the web view share these
//! functions, and every change records one of pgtrail's own events
//! ([`crate::store::events`]) in the same store transaction, so a change and
//! its audit entry commit together or not at all. Secrets never reach an
//! event: a user's record there is name, role, tables and disabled.
//!
//! Secrets at rest: passwords as argon2id PHC strings; session and API tokens
//! (32 random bytes each, far beyond guessing) as their SHA-256, which is
//! enough for a high-entropy secret and lets a request be checked with one
//! indexed lookup.

mod audited;
mod grants;
pub mod password;
pub mod past_lock;
pub mod sessions;
pub mod table_scope;
pub mod tokens;
pub mod users;

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use sha2::{Digest, Sha256};

pub use audited::{json_list, Audited};
pub use grants::Manager;

pub use table_scope::ScopedPattern;

/// What a user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Browse entries and View Difference.
    Viewer,
    /// A viewer who may also export.
    Auditor,
    /// An auditor who may also manage users and tokens, and sees pgtrail's own events.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Role, AuthError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| {
                AuthError::Invalid(format!("{s:?} is not a role; use viewer, auditor or admin"))
            })
    }
}

/// A user or token name: 1 to 64 letters, digits and `._@-`, so it is safe in
/// a URL, a log line and a header, and an e-mail address fits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    pub fn parse(text: &str) -> Result<Name, AuthError> {
        let ok = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
        if ok {
            Ok(Name(text.to_owned()))
        } else {
            Err(AuthError::Invalid(format!(
                "{:?} is not a valid name: use 1 to 64 letters, digits, '.', '_', '@' or '-'",
                crate::text::clip(text)
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Name, AuthError> {
        Name::parse(s)
    }
}

/// The tables a user or token is restricted to, each in every source or in
/// one ([`ScopedPattern`]); empty means every table of every source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables(pub Vec<ScopedPattern>);

impl Tables {
    /// Parses a comma-separated list (`public.orders, shop-eu:sales.*`); blank means every table.
    pub fn parse_list(text: &str) -> Result<Tables, AuthError> {
        let patterns = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| ScopedPattern::parse(p).map_err(AuthError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tables(patterns))
    }

    /// From the store's `text[]`; a pattern that no longer parses is an error
    /// rather than silently dropped, which would widen the restriction.
    pub fn from_stored(list: Vec<String>) -> Result<Tables, AuthError> {
        list.iter()
            .map(|p| {
                ScopedPattern::parse(p).map_err(|e| {
                    AuthError::Invalid(format!("a stored table restriction is invalid: {e}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Tables)
    }

    pub fn to_stored(&self) -> Vec<String> {
        self.0.iter().map(|p| p.as_str().to_owned()).collect()
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// `all` or the patterns joined with `, `.
    pub fn describe(&self) -> String {
        if self.is_all() {
            "all".into()
        } else {
            self.to_stored().join(", ")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad input; the message says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
    /// Beyond what the admin may do ([`Manager`]); the message says what and why.
    #[error("{0}")]
    Forbidden(String),
    #[error("there is no user {0:?}; see `pgtrail user list`")]
    NoSuchUser(String),
    #[error("there is already a user {0:?}; change it with `pgtrail user set-role` or `pgtrail user reset-password`")]
    UserExists(String),
    #[error("there is no API token {0:?}; see `pgtrail token list`")]
    NoSuchToken(String),
    #[error("there is already an API token {0:?}; choose another name")]
    TokenExists(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("hashing a password failed: {0}")]
    Hash(String),
}

impl From<tokio_postgres::Error> for AuthError {
    fn from(e: tokio_postgres::Error) -> Self {
        AuthError::Store(e.into())
    }
}

/// Who makes a change, as its event records it.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The pgtrail user, or for the CLI the operating-system user.
    pub name: Option<String>,
    /// `pgtrail web`, `pgtrail cli`.
    pub application: &'static str,
    pub client_addr: Option<String>,
}

impl Actor {
    /// The CLI: the operating-system user who ran it (there is no pgtrail user at a shell).
    pub fn cli() -> Actor {
        let os_user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(os_user_from_uid)
            .unwrap_or_else(|| "unknown".into());
        Actor {
            name: Some(format!("os:{os_user}")),
            application: "pgtrail cli",
            client_addr: None,
        }
    }

    pub fn event(
        &self,
        category: crate::store::events::Category,
        name: &'static str,
        summary: impl Into<String>,
    ) -> crate::store::events::OwnEvent {
        let mut e = crate::store::events::OwnEvent::new(category, name, self.application, summary)
            .client_addr(self.client_addr.clone());
        e.actor = self.name.clone();
        e
    }
}

/// The login name of this process's user, from its uid (services often run
/// without `USER` in the environment).
fn os_user_from_uid() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_owned())
    })
}

/// 32 random bytes from the operating system, base64url without padding.
pub fn random_secret() -> Result<String, AuthError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| AuthError::Hash(format!("no randomness from the operating system: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// How a token or session secret is stored and looked up.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Equal without an early exit, so a comparison's time does not tell how much matched.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (secret_hash(a), secret_hash(b));
    a.iter().zip(&b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order_and_parse() {
        assert!(Role::Viewer < Role::Auditor && Role::Auditor < Role::Admin);
        assert_eq!("admin".parse::<Role>().unwrap(), Role::Admin);
        let e = "root".parse::<Role>().unwrap_err().to_string();
        assert!(e.contains("viewer, auditor or admin"), "{e}");
    }

    #[test]
    fn names_are_checked() {
        assert!(Name::parse("alice@example.com").is_ok());
        for bad in ["", "a b", "x;y", &"a".repeat(65), "ä"] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn table_lists_parse_and_round_trip() {
        let t = Tables::parse_list("public.orders, shop-eu:sales.*").unwrap();
        assert_eq!(t.to_stored(), vec!["public.orders", "shop-eu:sales.*"]);
        assert_eq!(Tables::from_stored(t.to_stored()).unwrap(), t);
        assert!(Tables::parse_list(" ").unwrap().is_all());
        assert!(Tables::parse_list("nodot").is_err());
        assert!(Tables::parse_list("public.x, :public.y").is_err());
    }

    #[test]
    fn secrets_are_random_and_compare_exactly() {
        let (a, b) = (random_secret().unwrap(), random_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(same_secret(&a, &a.clone()) && !same_secret(&a, &b));
    }
}
