//! A message with one of pgtrail's prefixes that pgtrail's functions did not
//! sign ([`crate::capture::signature`]): never applied, and stored as an
//! entry of its own, an `EVENT` under `pgtrail.security`, so that an admin
//! sees that someone tried. The transaction's row changes are stored as
//! usual, with the context the real trigger produced (or none).

use std::sync::Arc;

use serde_json::json;

use super::OpenTxn;
use crate::capture::signature::Rejected;
use crate::entry::{Action, AuditEntry, Event};
use crate::pg::Lsn;
use crate::table::TableName;

/// A message that failed the check, as the stream carried it.
pub(super) struct Refused<'a> {
    pub lsn: Lsn,
    pub prefix: &'a str,
    /// As sent, signature (if any) and all.
    pub content: &'a str,
    pub rejected: Rejected,
}

/// The most of a refused message's content kept in its event: enough to see
/// what was tried; a role that emits larger ones cannot grow the store
/// without bound through them.
const KEPT_CONTENT_BYTES: usize = 64 * 1024;

/// Records the refused message (unless its transaction is already stored).
pub(super) fn on_forged(open: &OpenTxn, message: &Refused<'_>, out: &mut Vec<Event>) {
    tracing::warn!(
        lsn = %message.lsn,
        xid = open.txn.xid,
        prefix = message.prefix,
        reason = %message.rejected,
        "a pgtrail message failed the signature check and is not applied; recorded under pgtrail.security"
    );
    if open.skip {
        return;
    }
    out.push(Event::Entry(security_event(open, message)));
}

fn security_event(open: &OpenTxn, message: &Refused<'_>) -> AuditEntry {
    let (content, rejected) = (message.content, message.rejected);
    let kept = floor_char_boundary(content, KEPT_CONTENT_BYTES);
    let summary = format!("refused a {} message: {rejected}", message.prefix);
    let context = json!({
        "db_user": null,
        "client_addr": null,
        "application_name": "pgtrail run",
        "actor": null,
        "source": "pgtrail",
        "remarks": summary,
        "current_user": null,
        "client_port": null,
        "backend_pid": null,
    });
    let after = json!({
        "prefix": message.prefix,
        "content": &content[..kept],
        "content_bytes": content.len(),
        "content_clipped": kept < content.len(),
    });
    let details = json!({
        "event": "message_refused",
        "reason": rejected.as_str(),
        "xid": open.txn.xid,
        "lsn": message.lsn.to_string(),
    });
    AuditEntry {
        txn: open.txn.clone(),
        table: TableName::new("pgtrail".to_owned(), "security".to_owned()),
        action: Action::Event,
        primary_key: None,
        before: None,
        after: Some(after.to_string()),
        changed_columns: None,
        context: Arc::from(context.to_string()),
        details: Some(details.to_string()),
    }
}

/// The largest index ≤ `max` that is a character boundary of `text`.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assembler_with, entries, feed_as_sent, BEGIN_9, COMMIT_9};
    use crate::capture::signature::MessageKey;

    fn message(prefix: &str, content: &str) -> String {
        serde_json::json!({
            "action": "M", "xid": 9, "transactional": true, "prefix": prefix, "content": content,
        })
        .to_string()
    }

    #[test]
    fn a_forged_context_is_refused_and_recorded_and_the_real_one_applies() {
        let key = MessageKey::from_secret(b"source key");
        let mut a = assembler_with(&["*.*"], key.clone());
        let real = message(
            "pgtrail",
            &key.sign(
                "pgtrail",
                9,
                r#"{"session_user":"mallory","current_user":"mallory"}"#,
            ),
        );
        let forged = message(
            "pgtrail",
            r#"{"session_user":"postgres","current_user":"postgres"}"#,
        );
        let wrong_key = message(
            "pgtrail",
            &MessageKey::from_secret(b"guess").sign("pgtrail", 9, r#"{"session_user":"postgres"}"#),
        );
        let insert = r#"{"action":"I","xid":9,"schema":"s","table":"t","columns":[{"name":"id","typeoid":23,"value":1}],"pk":[]}"#;
        let out = feed_as_sent(
            &mut a,
            &[
                BEGIN_9, &real, insert, &forged, &wrong_key, insert, COMMIT_9,
            ],
        );
        let all = entries(&out);
        let security: Vec<_> = all.iter().filter(|e| e.table.schema == "pgtrail").collect();
        let rows: Vec<_> = all.iter().filter(|e| e.table.schema == "s").collect();
        assert_eq!(security.len(), 2);
        assert!(security[0]
            .details
            .as_deref()
            .unwrap()
            .contains(r#""reason":"unsigned""#));
        assert!(security[1]
            .details
            .as_deref()
            .unwrap()
            .contains(r#""reason":"bad_signature""#));
        assert!(security[0].after.as_deref().unwrap().contains("postgres"));
        assert_eq!(rows.len(), 2);
        for row in rows {
            assert!(
                row.context.contains(r#""db_user":"mallory""#),
                "{}",
                row.context
            );
        }
    }

    #[test]
    fn a_forged_partition_map_changes_nothing() {
        let key = MessageKey::from_secret(b"source key");
        let mut a = assembler_with(&["public.payments"], key);
        let forged = message(
            "pgtrail_partitions",
            r#"{"root":{"schema":"public","name":"scratch"},"members":[{"schema":"public","name":"payments","parent_schema":"public","parent_name":"scratch"}]}"#,
        );
        let insert = r#"{"action":"I","xid":9,"schema":"public","table":"payments","columns":[{"name":"id","typeoid":23,"value":1}],"pk":[]}"#;
        let out = feed_as_sent(&mut a, &[BEGIN_9, &forged, insert, COMMIT_9]);
        let tables: Vec<String> = entries(&out).iter().map(|e| e.table.to_string()).collect();
        assert_eq!(tables, ["pgtrail.security", "public.payments"]);
        assert!(!out
            .iter()
            .any(|e| matches!(e, crate::entry::Event::Partitions(_))));
    }

    #[test]
    fn content_is_clipped_on_a_character_boundary() {
        let text = "é".repeat(10);
        assert_eq!(super::floor_char_boundary(&text, 5), 4);
        assert_eq!(super::floor_char_boundary(&text, 100), 20);
    }
}
