//! The log's orders (a [`SortKey`] and a [`Dir`]ection) and the keyset
//! [`Cursor`] that says where a page starts in one of them.

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::text::clip;
use crate::web::error::WebError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Time,
    Actor,
    Ip,
    Action,
    Table,
}

impl SortKey {
    pub const ALL: [SortKey; 5] = [
        SortKey::Time,
        SortKey::Actor,
        SortKey::Ip,
        SortKey::Action,
        SortKey::Table,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Time => "time",
            SortKey::Actor => "actor",
            SortKey::Ip => "ip",
            SortKey::Action => "action",
            SortKey::Table => "table",
        }
    }

    /// The SQL expressions that order by this key, before the final `id`.
    /// Never NULL, so row comparisons in the keyset condition are exact.
    pub(super) fn exprs(self) -> &'static [&'static str] {
        match self {
            SortKey::Time => &[],
            // Exactly the expressions of the indexes transactions_actor and
            // transactions_client_addr, then the transaction (their id):
            // the index gives the order of the transactions, and entries
            // are sorted only within one transaction. By actor then id
            // alone, one actor's entries would all be sorted at once.
            SortKey::Actor => &["coalesce(actor, '')", "txn"],
            SortKey::Ip => &["coalesce(host(client_addr), '')", "txn"],
            SortKey::Action => &["action"],
            SortKey::Table => &["schema_name", "table_name"],
        }
    }

    /// Whether an expression of [`Self::exprs`] is a number (a transaction
    /// id): a cursor carries every key value as text, so it is read as text
    /// and compared as a number.
    pub(super) fn numeric(expr: &str) -> bool {
        expr == "txn"
    }

    /// Newest first for time, A to Z for the rest.
    pub fn default_dir(self) -> Dir {
        if self == SortKey::Time {
            Dir::Desc
        } else {
            Dir::Asc
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dir {
    Asc,
    #[default]
    Desc,
}

impl Dir {
    pub fn as_str(self) -> &'static str {
        match self {
            Dir::Asc => "asc",
            Dir::Desc => "desc",
        }
    }

    pub fn flip(self) -> Dir {
        match self {
            Dir::Asc => Dir::Desc,
            Dir::Desc => Dir::Asc,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sort {
    pub key: SortKey,
    pub dir: Dir,
}

/// Where a page starts: strictly after (or, going back, before) this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The sort key values of the row, as the SQL expressions gave them.
    pub keys: Vec<String>,
    pub id: i64,
    /// A "previous page" cursor: rows before this one, in reverse.
    pub backward: bool,
}

/// The cursor as it travels: base64url of this JSON. Sort and direction are in
/// it so that a cursor used with another order is refused, not misread.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorWire {
    s: String,
    d: String,
    k: Vec<String>,
    i: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    b: bool,
}

impl Cursor {
    pub fn encode(&self, sort: Sort) -> String {
        let wire = CursorWire {
            s: sort.key.as_str().into(),
            d: sort.dir.as_str().into(),
            k: self.keys.clone(),
            i: self.id,
            b: self.backward,
        };
        let json = serde_json::to_vec(&wire).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    pub fn decode(text: &str, sort: Sort) -> Result<Cursor, WebError> {
        let bad = || {
            WebError::bad(format!(
                "cursor {:?} is not one this server gave out; start again from the first page",
                clip(text)
            ))
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| bad())?;
        let wire: CursorWire = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if wire.s != sort.key.as_str() || wire.d != sort.dir.as_str() {
            return Err(WebError::bad(format!(
                "the cursor belongs to the order sort={}&dir={}, not sort={}&dir={}; start again from the first page",
                wire.s,
                wire.d,
                sort.key.as_str(),
                sort.dir.as_str()
            )));
        }
        if wire.k.len() != sort.key.exprs().len() || wire.i < 0 {
            return Err(bad());
        }
        // A number the statement casts: anything else would fail there.
        let exprs = sort.key.exprs().iter();
        if exprs
            .zip(&wire.k)
            .any(|(e, k)| SortKey::numeric(e) && k.parse::<i64>().is_err())
        {
            return Err(bad());
        }
        Ok(Cursor {
            keys: wire.k,
            id: wire.i,
            backward: wire.b,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_another_order() {
        let sort = Sort {
            key: SortKey::Table,
            dir: Dir::Asc,
        };
        let c = Cursor {
            keys: vec!["public".into(), "t".into()],
            id: 42,
            backward: true,
        };
        let text = c.encode(sort);
        assert_eq!(Cursor::decode(&text, sort).unwrap(), c);
        let other = Sort {
            key: SortKey::Table,
            dir: Dir::Desc,
        };
        assert!(
            matches!(Cursor::decode(&text, other), Err(WebError::BadRequest(m)) if m.contains("belongs"))
        );
    }

    #[test]
    fn a_cursor_by_actor_carries_a_transaction_id_that_must_be_a_number() {
        let sort = Sort {
            key: SortKey::Actor,
            dir: Dir::Asc,
        };
        let good = Cursor {
            keys: vec!["alice".into(), "17".into()],
            id: 42,
            backward: false,
        };
        assert_eq!(Cursor::decode(&good.encode(sort), sort).unwrap(), good);
        let forged = Cursor {
            keys: vec!["alice".into(), "17; DROP".into()],
            ..good
        };
        assert!(matches!(
            Cursor::decode(&forged.encode(sort), sort),
            Err(WebError::BadRequest(_))
        ));
    }
}
