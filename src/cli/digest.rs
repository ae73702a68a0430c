//! `pgtrail digest`: the newest signed chain head, as one line of JSON, for
//! the DBA to keep outside the store (a ticket, an email, a WORM bucket).
//! Compared later with what `pgtrail verify --public-key` reports, it shows
//! that the chain up to it was not rewritten, even by someone who could
//! delete signed heads from the store.

use anyhow::Result;

use crate::config::Config;
use crate::store::signing::SignedHead;

/// Prints the newest signed head; an error when there is none yet.
pub async fn run(config: &Config) -> Result<()> {
    let client = crate::store::open(&config.store).await?;
    match SignedHead::newest(&client).await? {
        Some(head) => {
            println!("{}", serde_json::to_string(&head)?);
            Ok(())
        }
        None => anyhow::bail!(
            "the store holds no signed head yet: set store.signing_key_file (an Ed25519 key in PEM, \
             from `openssl genpkey -algorithm ed25519`) and let the daemon run; it signs at most every \
             store.sign_every_seconds and when it stops"
        ),
    }
}
