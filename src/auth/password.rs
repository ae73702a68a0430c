//! Password hashing with argon2id (the `argon2` crate's defaults: 19 MiB,
//! 2 passes, 1 lane, as OWASP recommends), and a dummy hash so that signing in
//! as a user who does not exist costs the same as a wrong password.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::AuthError;

pub const MIN_LEN: usize = 8;
/// Hashing cost grows with length; nobody types more.
pub const MAX_LEN: usize = 1024;

/// Checks a new password's length.
pub fn check_new(password: &str) -> Result<(), AuthError> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(AuthError::Invalid(format!(
            "the password is too short: use at least {MIN_LEN} characters"
        )));
    }
    if password.len() > MAX_LEN {
        return Err(AuthError::Invalid(format!(
            "the password is too long: use at most {MAX_LEN} bytes"
        )));
    }
    Ok(())
}

/// An argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) with a random salt.
pub fn hash(password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt)
        .map_err(|e| AuthError::Hash(format!("no randomness from the operating system: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Whether `password` matches the stored hash; a malformed hash matches nothing.
pub fn verify(stored: &str, password: &str) -> bool {
    if password.len() > MAX_LEN {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a password nobody knows, with the same parameters as real ones.
static DUMMY: LazyLock<String> = LazyLock::new(|| {
    hash("pgtrail dummy password, never a real one")
        .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into())
});

/// Spends the time of one verification and says no: for unknown, disabled or locked users.
pub fn verify_dummy(password: &str) -> bool {
    let _ = verify(&DUMMY, password);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_argon2id_with_a_fresh_salt() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horsE"));
        assert_ne!(h, hash("correct horse").unwrap());
        assert!(!verify("not a hash", "x"));
        assert!(!verify_dummy("anything"));
    }

    #[test]
    fn new_passwords_are_checked() {
        assert!(check_new("short")
            .unwrap_err()
            .to_string()
            .contains("at least 8"));
        assert!(check_new("long enough").is_ok());
        assert!(check_new(&"x".repeat(2000)).is_err());
    }
}
