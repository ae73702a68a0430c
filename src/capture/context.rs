//! Messages from pgtrail's triggers in the source, read into entry parts:
//! the actor context (who made a change and from where), which the context
//! trigger (sql/source/context.sql) emits inside each transaction with prefix
//! `pgtrail`, and DDL commands, which the event triggers (sql/source/ddl.sql)
//! emit with prefix `pgtrail_ddl`.

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

/// Prefix of the context trigger's messages.
pub const CONTEXT_PREFIX: &str = "pgtrail";
/// Prefix of the DDL event triggers' messages.
pub const DDL_PREFIX: &str = "pgtrail_ddl";

/// Turns a context message's content into the entry's `context` JSON text.
pub fn from_message(content: &str) -> Result<String, serde_json::Error> {
    to_context_json(serde_json::from_str(content)?)
}

fn to_context_json(m: Message) -> Result<String, serde_json::Error> {
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

/// A DDL message's content, as the event triggers write it.
#[derive(Debug, Deserialize)]
struct DdlMessage {
    command_tag: String,
    object_type: String,
    schema: String,
    object_name: Option<String>,
    object_identity: String,
    sql: Option<String>,
    context: Option<Message>,
}

/// What a DDL entry is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ddl {
    /// `CREATE TABLE`, `DROP TABLE`, `ALTER TABLE`, …
    pub command_tag: String,
    /// `table`, `index`, `view`, …
    pub object_type: String,
    pub schema: String,
    /// The relation's own name where the object is one, else its identity.
    pub name: String,
    /// The entry's `after`: `{"command_tag", "object_type", "object_identity", "sql"}`.
    pub detail: String,
    pub context: String,
}

#[derive(Serialize)]
struct DdlDetail<'a> {
    command_tag: &'a str,
    object_type: &'a str,
    object_identity: &'a str,
    sql: Option<&'a str>,
}

pub fn ddl_from_message(content: &str) -> Result<Ddl, serde_json::Error> {
    let m: DdlMessage = serde_json::from_str(content)?;
    let detail = serde_json::to_string(&DdlDetail {
        command_tag: &m.command_tag,
        object_type: &m.object_type,
        object_identity: &m.object_identity,
        sql: m.sql.as_deref(),
    })?;
    let context = match m.context {
        Some(c) => to_context_json(c)?,
        None => crate::entry::EMPTY_CONTEXT.to_owned(),
    };
    Ok(Ddl {
        command_tag: m.command_tag,
        object_type: m.object_type,
        schema: m.schema,
        name: m.object_name.unwrap_or(m.object_identity),
        detail,
        context,
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
    fn ddl_message_becomes_entry_parts() {
        let d = ddl_from_message(
            r#"{"command_tag" : "ALTER TABLE", "object_type" : "table", "schema" : "public", "object_name" : "Order Items", "object_identity" : "public.\"Order Items\"", "sql" : "ALTER TABLE \"Order Items\" ADD COLUMN x int", "context" : {"session_user" : "dba", "actor" : null}}"#,
        )
        .unwrap();
        assert_eq!(d.schema, "public");
        assert_eq!(d.name, "Order Items");
        assert_eq!(
            d.detail,
            r#"{"command_tag":"ALTER TABLE","object_type":"table","object_identity":"public.\"Order Items\"","sql":"ALTER TABLE \"Order Items\" ADD COLUMN x int"}"#
        );
        assert!(
            d.context.starts_with(r#"{"db_user":"dba","#),
            "{}",
            d.context
        );
    }

    #[test]
    fn malformed_message_is_an_error() {
        assert!(from_message("not json").is_err());
    }
}
