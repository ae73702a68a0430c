//! The formats of one line per entry (JSON Lines, CEF) share their writer:
//! each line is built in a buffer kept from entry to entry, then written
//! whole with its line break.

use std::io::Write;

use super::{EntryWriter, ExportError, StoredEntry};

/// What a line format says about an entry.
pub trait LineFormat: Send {
    /// The room a line's buffer starts with.
    const CAPACITY: usize;
    /// `e` as one line, without the line break, appended to `out`.
    fn line(&self, e: &StoredEntry, out: &mut String);
}

/// The [`EntryWriter`] of a [`LineFormat`].
pub struct Lines<W, F> {
    out: W,
    line: String,
    format: F,
}

impl<W: Write, F: LineFormat> Lines<W, F> {
    pub fn new(out: W, format: F) -> Self {
        Lines {
            out,
            line: String::with_capacity(F::CAPACITY),
            format,
        }
    }
}

impl<W: Write + Send, F: LineFormat> EntryWriter<W> for Lines<W, F> {
    fn begin(&mut self) -> Result<(), ExportError> {
        Ok(())
    }

    fn entry(&mut self, e: &StoredEntry) -> Result<(), ExportError> {
        self.line.clear();
        self.format.line(e, &mut self.line);
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())?;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<W, ExportError> {
        self.out.flush()?;
        Ok(self.out)
    }
}
