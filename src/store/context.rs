//! The context facts the store keeps in plain columns next to the `context`
//! JSON of a run's row of `pgtrail.transactions`, computed by the writer once
//! per run.

use serde::Deserialize;

/// The context facts the store also keeps in plain columns (`actor`,
/// `client_addr`: of `pgtrail.transactions` from migration 23, of the entries
/// before, see `sql/store/0003_web_columns.sql`), so the web view filters and
/// sorts by them through small indexes instead of reading every context's
/// JSON. Computed by pgtrail, once per run (or per entry, for the text COPY
/// of the older layout).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextColumns {
    /// Who, as the log shows it: the application actor, else the database role.
    pub actor: Option<String>,
    /// The client's address; `None` over a Unix socket, or where the text is
    /// not an address.
    pub client_addr: Option<std::net::IpAddr>,
}

/// The fields of a stored context that [`ContextColumns`] needs.
#[derive(Deserialize)]
struct StoredContext<'a> {
    #[serde(borrow, default)]
    actor: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    db_user: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    client_addr: Option<std::borrow::Cow<'a, str>>,
}

impl ContextColumns {
    /// From an entry's `context` JSON text; all `None` if it is not an object.
    pub fn of(context: &str) -> ContextColumns {
        let Ok(c) = serde_json::from_str::<StoredContext>(context) else {
            return ContextColumns::default();
        };
        ContextColumns {
            // PostgreSQL text cannot hold NUL, which a JSON string can
            // (`\u0000`): it is replaced, as the writer does in names.
            actor: c.actor.or(c.db_user).map(|a| a.replace('\0', "\u{fffd}")),
            // PostgreSQL writes a host address without a prefix; a prefix, if
            // one ever came, is dropped rather than losing the address.
            client_addr: c
                .client_addr
                .and_then(|a| a.split('/').next().and_then(|a| a.parse().ok())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_columns_take_actor_else_role_and_the_address() {
        let c = ContextColumns::of(
            r#"{"db_user":"app","client_addr":"10.0.0.7","actor":"alice \"al\"","source":null}"#,
        );
        assert_eq!(c.actor.as_deref(), Some("alice \"al\""));
        assert_eq!(c.client_addr, Some("10.0.0.7".parse().unwrap()));
        let c = ContextColumns::of(crate::entry::EMPTY_CONTEXT);
        assert_eq!(c, ContextColumns::default());
        let c =
            ContextColumns::of(r#"{"db_user":"app","client_addr":"2001:db8::1/128","actor":null}"#);
        assert_eq!(c.actor.as_deref(), Some("app"));
        assert_eq!(c.client_addr, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            ContextColumns::of(r#"{"client_addr":"not an address"}"#).client_addr,
            None
        );
        assert_eq!(ContextColumns::of("[]"), ContextColumns::default());
        assert_eq!(
            ContextColumns::of(r#"{"actor":"a\u0000b"}"#)
                .actor
                .as_deref(),
            Some("a\u{fffd}b")
        );
    }
}
