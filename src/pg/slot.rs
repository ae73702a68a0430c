//! [`SlotName`]: the name of a logical replication slot, checked against
//! PostgreSQL's rules before it is used in SQL or a replication command.

/// A logical replication slot name: PostgreSQL allows lower-case letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotName(String);

impl SlotName {
    pub fn parse(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(SlotName(name.to_owned()))
        } else {
            Err(format!("{name:?} is not a valid slot name: use 1 to 63 lower-case letters, digits and underscores"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SlotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
