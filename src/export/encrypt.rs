//! Encryption of exports with age (<https://age-encryption.org>): the output
//! is an age file encrypted to every configured recipient, written as a
//! stream, so encrypting costs no memory. Anyone holding one of the matching
//! identities decrypts it with the standard tool: `age -d -i key.txt file.age`.

use std::io::Write;
use std::str::FromStr;

use super::ExportError;

/// The most recipients `export.age_recipients` may list: an archive's reader
/// refuses an age header longer than pgtrail writes for this many
/// (src/archive/decrypt.rs), since a hostile file's header costs age time
/// quadratic in its length.
pub const MAX_RECIPIENTS: usize = 1000;

/// The recipients every export is encrypted to (`export.age_recipients`).
#[derive(Clone)]
pub struct Recipients(Vec<age::x25519::Recipient>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|r| r.to_string()))
            .finish()
    }
}

impl Recipients {
    /// Parses `age1…` public keys; the error names the one that is wrong and why.
    pub fn parse(keys: &[String]) -> Result<Recipients, String> {
        if keys.len() > MAX_RECIPIENTS {
            return Err(format!(
                "it lists {} recipients, and at most {MAX_RECIPIENTS} are allowed: give fewer (a \
                 team can share one key)",
                keys.len()
            ));
        }
        let mut out = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let k = key.trim();
            let r = age::x25519::Recipient::from_str(k).map_err(|e| {
                let hint = if k.starts_with("AGE-SECRET-KEY-") {
                    "this is a secret key (an identity); give its public key, which `age-keygen -y key.txt` prints"
                } else if k.starts_with("ssh-") {
                    "SSH keys are not supported; give an age public key made with `age-keygen`"
                } else {
                    "an age public key starts with age1 and is printed by `age-keygen`"
                };
                // A secret key is never repeated into a message or a log.
                let shown = if k.starts_with("AGE-SECRET-KEY-") {
                    "AGE-SECRET-KEY-…".to_owned()
                } else {
                    clip(k)
                };
                format!("recipient {} ({shown:?}) is not an age public key: {e}; {hint}", i + 1)
            })?;
            out.push(r);
        }
        Ok(Recipients(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() > 70 {
        format!("{}…", text.chars().take(70).collect::<String>())
    } else {
        text.to_owned()
    }
}

/// An export's output: as is, or through an age encryptor.
pub enum Sealed<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sealed<W> {
    pub fn plain(out: W) -> Sealed<W> {
        Sealed::Plain(out)
    }

    /// Writes the age header to `out` and encrypts what follows.
    pub fn encrypted(recipients: &Recipients, out: W) -> Result<Sealed<W>, ExportError> {
        let encryptor =
            age::Encryptor::with_recipients(recipients.0.iter().map(|r| r as &dyn age::Recipient))
                .map_err(|e| ExportError::Encrypt(e.to_string()))?;
        Ok(Sealed::Age(encryptor.wrap_output(out)?))
    }

    /// Ends the stream (age writes its last chunk here) and returns the output, flushed.
    pub fn finish(self) -> Result<W, ExportError> {
        let mut out = match self {
            Sealed::Plain(out) => out,
            Sealed::Age(w) => w.finish()?,
        };
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for Sealed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sealed::Plain(w) => w.write(buf),
            Sealed::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sealed::Plain(w) => w.flush(),
            Sealed::Age(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn encrypts_to_every_recipient() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let r = Recipients::parse(&[a.to_public().to_string(), b.to_public().to_string()]).unwrap();
        let mut s = Sealed::encrypted(&r, Vec::new()).unwrap();
        s.write_all(b"secret audit data").unwrap();
        let file = s.finish().unwrap();
        for id in [&a, &b] {
            let d = age::Decryptor::new(&file[..]).unwrap();
            let mut plain = String::new();
            d.decrypt(std::iter::once(id as &dyn age::Identity))
                .unwrap()
                .read_to_string(&mut plain)
                .unwrap();
            assert_eq!(plain, "secret audit data");
        }
    }

    #[test]
    fn too_many_recipients_are_refused() {
        let key = age::x25519::Identity::generate().to_public().to_string();
        let most = vec![key; MAX_RECIPIENTS];
        assert_eq!(Recipients::parse(&most).unwrap().len(), MAX_RECIPIENTS);
        let over = [most.clone(), most[..1].to_vec()].concat();
        let e = Recipients::parse(&over).unwrap_err();
        assert!(
            e.contains("lists 1001 recipients") && e.contains("at most 1000"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_recipient_is_named() {
        let good = age::x25519::Identity::generate().to_public().to_string();
        let e = Recipients::parse(&[good, "age1nonsense".into()]).unwrap_err();
        assert!(
            e.contains("recipient 2") && e.contains("age1nonsense"),
            "{e}"
        );
        let secret = age::x25519::Identity::generate();
        use age::secrecy::ExposeSecret;
        let e = Recipients::parse(&[secret.to_string().expose_secret().to_owned()]).unwrap_err();
        assert!(
            e.contains("secret key") && e.contains("age-keygen -y"),
            "{e}"
        );
        let secret_text = secret.to_string().expose_secret().to_owned();
        assert!(
            !e.contains(&secret_text[15..]),
            "the secret key must not be repeated: {e}"
        );
    }
}
