//! XLSX: a workbook with one sheet of entries (more when there are more
//! than a sheet holds), the same columns as CSV, typed: `id` and `xid` are
//! numbers, `committed_at` a date and time (UTC, shown to the millisecond),
//! the rest text. The header row is frozen and carries filters.
//!
//! Memory: the sheets are written in the crate's constant-memory mode, which
//! keeps one row in memory and spills the rest to a temporary file; the zip
//! container is assembled from those files when the export finishes, so
//! nothing reaches the output before the last entry is read. Those files hold
//! the rows in plaintext, also for an encrypted export, so they go in a
//! directory of the export's own, mode 0700, that [`super::run`] removes
//! when the export ends.
//!
//! Excel's limits shape two things: a sheet holds 1,048,576 rows, so every
//! 1,048,575 entries start a new sheet (`entries 2`, …) with its own header;
//! a cell holds 32,767 characters, so a longer value (a large row image) is
//! cut there and ends with a note saying so — the other formats carry it whole.

use std::io::Write;
use std::path::Path;

use rust_xlsxwriter::{ColNum, Format, RowNum, Workbook, Worksheet, XlsxError};

use super::{EntryWriter, ExportError, StoredEntry, FIELDS};

/// Rows in a sheet, header included.
const SHEET_ROWS: RowNum = 1_048_576;
/// Characters in a cell.
pub const CELL_CHARS: usize = 32_767;
const TRUNCATED: &str =
    "… [cut at Excel's cell limit; the full value is in the JSON Lines or CSV export]";

/// Widths of the columns, in characters.
const WIDTHS: [f64; 14] = [
    10.0, 24.0, 10.0, 13.0, 12.0, 20.0, 10.0, 18.0, 40.0, 40.0, 20.0, 40.0, 30.0, 14.0,
];

pub struct Xlsx<W> {
    out: Option<W>,
    book: Workbook,
    header: Format,
    time: Format,
    /// Index of the sheet being written, and its next row.
    sheet: usize,
    row: RowNum,
}

impl<W: Write + Send> Xlsx<W> {
    /// A workbook over `out` whose sheets spill into `scratch`, a directory
    /// of this export's own (see [`super::scratch_dir`]).
    pub fn new(out: W, scratch: &Path) -> Result<Self, ExportError> {
        let mut book = Workbook::new();
        // Rows of large exports take more than the 4 GiB a plain zip member may hold.
        book.use_zip_large_file(true);
        book.set_tempdir(scratch)?;
        Ok(Xlsx {
            out: Some(out),
            book,
            header: Format::new().set_bold(),
            time: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss.000"),
            sheet: 0,
            row: 0,
        })
    }

    fn add_sheet(&mut self) -> Result<(), ExportError> {
        let n = self.book.worksheets().len();
        let header = self.header.clone();
        let sheet = self.book.add_worksheet_with_constant_memory()?;
        sheet.set_name(if n == 0 {
            "entries".to_owned()
        } else {
            format!("entries {}", n + 1)
        })?;
        for (col, width) in WIDTHS.iter().enumerate() {
            sheet.set_column_width(col as ColNum, *width)?;
        }
        sheet.set_freeze_panes(1, 0)?;
        for (col, name) in FIELDS.iter().enumerate() {
            sheet.write_string_with_format(0, col as ColNum, *name, &header)?;
        }
        self.sheet = n;
        self.row = 1;
        Ok(())
    }

    fn current(&mut self) -> Result<&mut Worksheet, XlsxError> {
        self.book.worksheet_from_index(self.sheet)
    }
}

/// `text`, cut to what a cell holds.
pub fn cell_text(text: &str) -> std::borrow::Cow<'_, str> {
    // Excel counts UTF-16 code units; so does this, to stay under its limit.
    if text.len() <= CELL_CHARS || text.encode_utf16().count() <= CELL_CHARS {
        return text.into();
    }
    let keep = CELL_CHARS - TRUNCATED.encode_utf16().count();
    let mut units = 0;
    let end = text
        .char_indices()
        .find(|(_, c)| {
            units += c.len_utf16();
            units > keep
        })
        .map_or(text.len(), |(i, _)| i);
    format!("{}{TRUNCATED}", &text[..end]).into()
}

impl<W: Write + Send> EntryWriter<W> for Xlsx<W> {
    fn begin(&mut self) -> Result<(), ExportError> {
        self.add_sheet()
    }

    fn entry(&mut self, e: &StoredEntry) -> Result<(), ExportError> {
        if self.row == SHEET_ROWS {
            self.add_sheet()?;
        }
        let row = self.row;
        let time = self.time.clone();
        let sheet = self.current()?;
        sheet.write_number(row, 0, e.id as f64)?;
        sheet.write_datetime_with_format(row, 1, e.committed_at.naive_utc(), &time)?;
        if let Some(xid) = e.xid {
            sheet.write_number(row, 2, xid as f64)?;
        }
        let texts = [
            e.lsn.as_deref(),
            Some(e.schema.as_str()),
            Some(e.table.as_str()),
            Some(e.action.as_str()),
        ]
        .into_iter()
        .chain(e.json.iter().map(Option::as_deref))
        .chain([Some(e.source.as_str())]);
        for (col, value) in (3..).zip(texts) {
            // SQL NULL is an empty cell, as a spreadsheet expects.
            if let Some(v) = value {
                sheet.write_string(row, col, cell_text(v).as_ref())?;
            }
        }
        self.row += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<W, ExportError> {
        let last_col = (FIELDS.len() - 1) as ColNum;
        for i in 0..self.book.worksheets().len() {
            let last_row = if i == self.sheet {
                self.row - 1
            } else {
                SHEET_ROWS - 1
            };
            self.book
                .worksheet_from_index(i)?
                .autofilter(0, 0, last_row, last_col)?;
        }
        let mut out = self.out.take().ok_or_else(|| {
            ExportError::Io(std::io::Error::other("the XLSX writer was finished twice"))
        })?;
        self.book.save_to_writer(&mut out)?;
        out.flush()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_to_a_cell_with_a_note() {
        assert_eq!(cell_text("short"), "short");
        let long = "é".repeat(40_000);
        let cut = cell_text(&long);
        assert_eq!(cut.encode_utf16().count(), CELL_CHARS);
        assert!(cut.ends_with(TRUNCATED));
        // Characters outside the BMP count twice.
        let emoji = "😀".repeat(20_000);
        assert!(cell_text(&emoji).encode_utf16().count() <= CELL_CHARS);
    }
}
