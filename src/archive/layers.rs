//! The layers around an archive's text, taken off by the reader
//! ([`super::read`]): age (with an identity file) and zstd, each bounded in
//! what a hostile file can make the reader hold or do.
//!
//! zstd allocates the window a frame's header asks for: at most
//! [`MAX_WINDOW_LOG`]. age's parser reads its header a line at a time and
//! parses it again from its start after each line, so a header of many
//! short lines costs time quadratic in their number. A header pgtrail writes
//! is small (two lines, about 100 bytes, a recipient, and
//! `[export] age_recipients` takes at most [`MAX_RECIPIENTS`]): a longer one
//! ([`MAX_AGE_HEADER`], [`MAX_AGE_LINES`]) is refused before age parses any
//! of it.

use std::io::{self, BufRead, Read};
use std::path::Path;

use super::lines::size;
use super::ArchiveError;
use crate::export::encrypt::MAX_RECIPIENTS;

/// The longest age header a reader takes, in bytes and in lines: pgtrail's
/// header for [`MAX_RECIPIENTS`] recipients is under 100 KiB and 2,010 lines
/// (two lines, 98 bytes, a recipient; the header's own two lines; one random
/// "grease" stanza of at most 4 lines and 300 bytes).
pub const MAX_AGE_HEADER: u64 = 128 << 10;
/// See [`MAX_AGE_HEADER`].
pub const MAX_AGE_LINES: usize = 2 * MAX_RECIPIENTS + 16;

/// The largest zstd window a reader allocates, as a power of two: 128 MiB,
/// zstd's own default limit (`zstd -d` refuses more unless told). pgtrail
/// compresses at level 3, with a window of 2 MiB; a file compressed again
/// with `--long` still reads.
pub const MAX_WINDOW_LOG: u32 = 27;

/// The decompressed text of `plain`: one zstd frame (a skippable frame or a
/// second frame would otherwise be read, or skipped, as if it belonged),
/// with a window of at most [`MAX_WINDOW_LOG`].
pub fn decompress<R: BufRead>(plain: R) -> io::Result<zstd::Decoder<'static, R>> {
    let mut decoder = zstd::Decoder::with_buffer(plain)?.single_frame();
    decoder.window_log_max(MAX_WINDOW_LOG)?;
    Ok(decoder)
}

/// What is wrong, when reading failed because the frame asks for a window
/// over [`MAX_WINDOW_LOG`] (zstd's message for it).
pub fn window_problem(e: &io::Error) -> Option<String> {
    e.to_string()
        .contains("Frame requires too much memory")
        .then(|| {
            format!(
                "its zstd frame needs a window of more than {} to decompress, and pgtrail reads at \
                 most that (it writes 2 MiB ones): the file was not written by pgtrail, or was changed",
                size(1 << MAX_WINDOW_LOG)
            )
        })
}

/// Why a file (or, `inside`, its decrypted content) that does not start
/// with a zstd frame is not an archive.
pub fn not_zstd(start: &[u8], inside: bool) -> String {
    // Skippable frames have the magic numbers 0x184D2A50 to 0x184D2A5F, little-endian.
    let skippable =
        start.len() >= 4 && start[0] & 0xf0 == 0x50 && start[1..4] == [0x2a, 0x4d, 0x18];
    match (skippable, inside) {
        (true, _) => "it begins with a zstd skippable frame: pgtrail writes one zstd frame and \
                      nothing else, so the file was changed"
            .to_owned(),
        (false, false) => {
            "it is not a pgtrail archive: it is neither zstd-compressed nor age-encrypted"
                .to_owned()
        }
        (false, true) => {
            "what it encrypts is not zstd-compressed: it is not a pgtrail archive".into()
        }
    }
}

/// What [`decrypt`] reads from: the header it read first, then the rest of the file.
pub type Decrypted<R> = age::stream::StreamReader<io::Chain<io::Cursor<Vec<u8>>, R>>;

/// The decrypted content of the age file `raw` (the archive at `path`),
/// with an identity from the file `identity`.
pub fn decrypt<R: BufRead>(
    mut raw: R,
    path: &Path,
    identity: Option<&Path>,
) -> Result<Decrypted<R>, ArchiveError> {
    let sealed = |path: &Path, problem: String| ArchiveError::Sealed {
        path: path.to_owned(),
        problem,
    };
    let Some(id_file) = identity else {
        return Err(sealed(
            path,
            "it is encrypted with age: give the identity file (the secret key, from age-keygen) \
             of one of its recipients with --identity FILE"
                .into(),
        ));
    };
    let identities = age::IdentityFile::from_file(id_file.to_string_lossy().into_owned())
        .map_err(|e| sealed(id_file, format!("cannot read this age identity file: {e}")))?
        .into_identities()
        .map_err(|e| sealed(id_file, format!("cannot use this age identity file: {e}")))?;
    if identities.is_empty() {
        return Err(sealed(
            id_file,
            "it holds no age identity (AGE-SECRET-KEY-1…)".into(),
        ));
    }
    let broken = |problem: String| ArchiveError::Broken {
        path: path.to_owned(),
        line: None,
        id: None,
        problem,
    };
    let mut header = Vec::new();
    let whole = read_header(&mut raw, &mut header).map_err(|e| {
        broken(format!(
            "its age header cannot be read ({e}): the file is truncated or damaged"
        ))
    })?;
    if !whole {
        return Err(broken(format!(
            "its age header is longer than {} or {MAX_AGE_LINES} lines, and pgtrail writes none \
             that long (at most {MAX_RECIPIENTS} recipients): the file was not written by pgtrail, \
             or was changed",
            size(MAX_AGE_HEADER)
        )));
    }
    let decryptor = age::Decryptor::new_buffered(io::Cursor::new(header).chain(raw))
        .map_err(|e| broken(format!("its age header is damaged: {e}")))?;
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => sealed(
                path,
                format!(
                    "no identity in {} decrypts it: it was encrypted to other recipients",
                    id_file.display()
                ),
            ),
            e => broken(format!("it cannot be decrypted: {e}")),
        })
}

/// Reads the lines of an age header from `raw` into `header`, through its
/// last line (`---` and its MAC), or its first when that is not version 1's
/// (age then names the version): `false` when it is longer than
/// [`MAX_AGE_HEADER`] or [`MAX_AGE_LINES`], the rest left unread.
fn read_header(raw: &mut impl BufRead, header: &mut Vec<u8>) -> io::Result<bool> {
    for n in 0..MAX_AGE_LINES {
        let start = header.len();
        let room = MAX_AGE_HEADER.saturating_sub(start as u64);
        let read = raw.by_ref().take(room + 1).read_until(b'\n', header)?;
        if header.len() as u64 > MAX_AGE_HEADER {
            return Ok(false);
        }
        let line = &header[start..];
        if read == 0 || line.starts_with(b"---") || (n == 0 && line != b"age-encryption.org/v1\n") {
            return Ok(true);
        }
    }
    Ok(false)
}
