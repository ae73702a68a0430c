//! What a store error means for capture, told by its SQLSTATE class.
//!
//! The daemon retries most errors with backoff, but retrying is only useful
//! when the cause goes away by itself. An error that says the store refuses
//! the *data* of a source transaction recurs every time that transaction is
//! written, and retrying it forever would pin the slot and fill the source's
//! disk with WAL; such a transaction is quarantined instead (see
//! `pipeline::recovery`). Everything else is either transient (retried
//! quietly) or needs someone's attention (retried, logged as an error), and
//! never quarantines data.

/// How capture treats a store error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// It will likely pass without anyone doing anything: the connection
    /// dropped, the store is restarting, a lock or serialization conflict, a
    /// timeout, too many connections.
    Transient,
    /// The store refuses the data it was given: it recurs for this source
    /// transaction whatever is retried, and only for this one.
    Refused,
    /// Something about the store or its setup is wrong (a missing table, a
    /// permission): retrying helps only once someone fixes it.
    Attention,
}

/// Classifies a SQLSTATE (five characters, e.g. `23514`).
pub fn classify(sqlstate: &str) -> Failure {
    let class = sqlstate.get(..2).unwrap_or("");
    match class {
        // 22 data exception (invalid text, value out of range, a NUL in
        // text), 23 integrity constraint violation (a CHECK, NOT NULL or
        // unique constraint or an exclusion refusing a row; pgtrail's
        // exactly-once rests on the checkpoint row and the chain head's
        // compare-and-set, never on catching one of these), 54 program limit
        // exceeded (a row or index entry too big).
        // 22P03 and 22P04 (bad binary data, bad COPY format) are the
        // writer's own framing, never a value's: quarantining would turn a
        // bug into lost entries.
        "22" if matches!(sqlstate, "22P03" | "22P04") => Failure::Attention,
        "22" | "23" | "54" => Failure::Refused,
        // 08 connection exception, 40 transaction rollback (serialization
        // failure, deadlock), 53 insufficient resources (too many
        // connections, disk full, out of memory), 57 operator intervention
        // (admin or crash shutdown, cannot connect now, statement timeout
        // or cancel), 58 system error (I/O), XX internal error.
        "08" | "40" | "53" | "57" | "58" | "XX" => Failure::Transient,
        // 55P03 lock not available (lock_timeout); 55006 object in use.
        "55" if matches!(sqlstate, "55P03" | "55006") => Failure::Transient,
        _ => Failure::Attention,
    }
}

/// Classifies a client error: one without a SQLSTATE is the connection's
/// (closed, reset, timed out), hence transient.
pub fn of_error(e: &tokio_postgres::Error) -> Failure {
    match e.as_db_error() {
        // A commit time no partition holds is the store's to fix (the writer
        // makes the partition first; the next session does), never the data's:
        // it must not quarantine. Same SQLSTATE as a CHECK refusing a row,
        // told apart by naming no constraint (the message is translated).
        Some(db) if db.code().code() == "23514" && db.constraint().is_none() => Failure::Transient,
        Some(db) => classify(db.code().code()),
        None => Failure::Transient,
    }
}

/// The SQLSTATE of a client error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| db.code().code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_the_store_refuses_is_refused() {
        for code in [
            "22P02", // invalid text representation
            "22021", // character not in repertoire
            "22P05", // untranslatable character (a NUL in text)
            "22001", // string too long for its column
            "23514", // check violation
            "23502", // not null violation
            "23505", // unique violation
            "54000", // program limit exceeded (row too big)
        ] {
            assert_eq!(classify(code), Failure::Refused, "{code}");
        }
    }

    #[test]
    fn passing_troubles_are_transient() {
        for code in [
            "08006", // connection failure
            "40001", // serialization failure
            "40P01", // deadlock
            "53300", // too many connections
            "53100", // disk full
            "57P01", // admin shutdown
            "57P03", // cannot connect now (starting up)
            "57014", // query canceled (statement timeout)
            "55P03", // lock not available (lock timeout)
            "58030", // I/O error
            "XX000", // internal error
        ] {
            assert_eq!(classify(code), Failure::Transient, "{code}");
        }
    }

    #[test]
    fn setup_problems_need_attention_and_never_quarantine() {
        for code in [
            "42P01", // undefined table: setup missing
            "42501", // insufficient privilege (the append-only trigger, a missing grant)
            "42883", // undefined function
            "3D000", // no such database
            "28P01", // wrong password
            "55000", // object not in prerequisite state
            "P0001", // a trigger's RAISE: whose, and why, is not known
            "22P03", // incorrect binary data format: the writer's COPY framing
            "22P04", // bad COPY file format: the same
            "", "2",
        ] {
            assert_eq!(classify(code), Failure::Attention, "{code:?}");
        }
    }
}
