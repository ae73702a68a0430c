//! Actor context: who made a change and from where, as carried by the
//! `pgtrail` logical message that the context trigger (sql/source/context.sql)
//! emits inside each transaction, turned into the entry's `context` object.

use serde::{Deserialize, Serialize};

/// The message's content, as the trigger writes it.
#[derive(Debug, Deserialize)]
struct Message {
    session_user: Option<String>,
    current_user: Option<String>,
    client_addr: Option<String>,
    client_port: Option<i64>,
    application_name: Option<String>,
    backend_pid: Option<i64>,
    actor: Option<String>,
    source: Option<String>,
    remarks: Option<String>,
}

/// The entry's `context`, fields in the documented order.
#[derive(Debug, Serialize)]
struct Context {
    /// The role that logged in (`session_user`).
    db_user: Option<String>,
    /// The client's IP address; null over a Unix socket.
    client_addr: Option<String>,
    application_name: Option<String>,
    /// Set by the application with `SET LOCAL pgtrail.actor = …`.
    actor: Option<String>,
    source: Option<String>,
    remarks: Option<String>,
    /// The effective role (differs from db_user after `SET ROLE`).
    current_user: Option<String>,
    client_port: Option<i64>,
    backend_pid: Option<i64>,
}

/// Turns a context message's content into the entry's `context` JSON text.
pub fn from_message(content: &str) -> Result<String, serde_json::Error> {
    let m: Message = serde_json::from_str(content)?;
    serde_json::to_string(&Context {
        db_user: m.session_user,
        client_addr: m.client_addr,
        application_name: m.application_name,
        actor: m.actor,
        source: m.source,
        remarks: m.remarks,
        current_user: m.current_user,
        client_port: m.client_port,
        backend_pid: m.backend_pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_becomes_context_in_documented_order() {
        let c = from_message(
            r#"{"session_user" : "app", "current_user" : "auditor", "client_addr" : "127.0.0.1", "client_port" : 5555, "application_name" : "shop", "backend_pid" : 42, "actor" : "alice", "source" : null, "remarks" : "a \"quoted\" note"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            r#"{"db_user":"app","client_addr":"127.0.0.1","application_name":"shop","actor":"alice","source":null,"remarks":"a \"quoted\" note","current_user":"auditor","client_port":5555,"backend_pid":42}"#
        );
    }

    #[test]
    fn malformed_message_is_an_error() {
        assert!(from_message("not json").is_err());
    }
}
