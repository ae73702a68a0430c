//! CSV as RFC 4180 has it: comma-separated, records ending in CRLF, a field
//! quoted when it holds a comma, quote or line break (quotes doubled). One header row with the field
//! names, then one row per entry; JSON columns hold their JSON text (`null`
//! for SQL NULL), `xid` and `lsn` are empty for pgtrail's own events. An
//! optional UTF-8 byte order mark makes spreadsheet programs read the file as
//! UTF-8 rather than the system's legacy code page.
//!
//! Schema and table names are the only free-text cells (the rest are numbers,
//! times and JSON, which starts with `{`, `[`, `"` or a letter). A name that
//! starts with `=`, `+`, `-`, `@`, a tab or a carriage return is written with
//! a `'` before it, so that a spreadsheet shows it as text instead of running
//! it as a formula: anyone who may create a table in the source chooses it.

use std::io::Write;

use super::{EntryWriter, ExportError, StoredEntry, FIELDS};

/// The UTF-8 byte order mark.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

pub struct Csv<W: Write> {
    /// The output until `begin` puts the mark on it and wraps it.
    out: Option<W>,
    w: Option<csv::Writer<W>>,
    bom: bool,
}

impl<W: Write> Csv<W> {
    pub fn new(out: W, bom: bool) -> Self {
        Csv {
            out: Some(out),
            w: None,
            bom,
        }
    }

    fn writer(&mut self) -> Result<&mut csv::Writer<W>, ExportError> {
        self.w
            .as_mut()
            .ok_or_else(|| ExportError::Writer("CSV written before it was begun".into()))
    }
}

impl<W: Write + Send> EntryWriter<W> for Csv<W> {
    fn begin(&mut self) -> Result<(), ExportError> {
        let mut out = self
            .out
            .take()
            .ok_or_else(|| ExportError::Writer("CSV begun twice".into()))?;
        if self.bom {
            out.write_all(BOM)?;
        }
        let mut w = csv::WriterBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_writer(out);
        w.write_record(FIELDS)?;
        self.w = Some(w);
        Ok(())
    }

    fn entry(&mut self, e: &StoredEntry) -> Result<(), ExportError> {
        let id = e.id.to_string();
        let at = e.committed_at_text();
        let xid = e.xid.map(|x| x.to_string()).unwrap_or_default();
        let schema = as_text(&e.schema);
        let table = as_text(&e.table);
        let fixed = [
            id.as_str(),
            at.as_str(),
            xid.as_str(),
            e.lsn.as_deref().unwrap_or(""),
            &schema,
            &table,
            e.action.as_str(),
        ];
        let json = e.json.iter().map(|j| j.as_deref().unwrap_or("null"));
        // A source name is lower-case letters, digits, `_` and `-` after a
        // letter or digit: never a formula.
        let source = [e.source.as_str()];
        self.writer()?
            .write_record(fixed.into_iter().chain(json).chain(source))?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<W, ExportError> {
        let mut out = match (self.w.take(), self.out.take()) {
            (Some(w), _) => w.into_inner().map_err(|e| e.into_error())?,
            (None, Some(out)) => out,
            (None, None) => return Err(ExportError::Writer("CSV finished twice".into())),
        };
        out.flush()?;
        Ok(out)
    }
}

/// `name`, or `'name` where a spreadsheet would take it for a formula.
fn as_text(name: &str) -> std::borrow::Cow<'_, str> {
    if name.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{name}"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::as_text;

    #[test]
    fn names_a_spreadsheet_would_run_are_written_as_text() {
        assert_eq!(as_text("orders"), "orders");
        assert_eq!(as_text("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        for name in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(as_text(name), format!("'{name}"));
        }
    }
}
