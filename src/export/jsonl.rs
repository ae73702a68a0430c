//! JSON Lines: one entry per line, as [`StoredEntry::write_json`] writes it
//! (the same objects the web API returns).

use std::io::Write;

use super::{EntryWriter, ExportError, StoredEntry};

pub struct Jsonl<W> {
    out: W,
    line: String,
}

impl<W: Write> Jsonl<W> {
    pub fn new(out: W) -> Self {
        Jsonl {
            out,
            line: String::with_capacity(1024),
        }
    }
}

impl<W: Write + Send> EntryWriter<W> for Jsonl<W> {
    fn begin(&mut self) -> Result<(), ExportError> {
        Ok(())
    }

    fn entry(&mut self, e: &StoredEntry) -> Result<(), ExportError> {
        self.line.clear();
        e.write_json(&mut self.line);
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<W, ExportError> {
        self.out.flush()?;
        Ok(self.out)
    }
}
