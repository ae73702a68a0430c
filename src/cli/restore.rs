//! `pgtrail restore FILE [--identity AGE_KEY_FILE] [--hold DURATION] [--max-line SIZE]`: an
//! archive that retention wrote loaded back into the store, into the
//! partition it was dropped from, for an investigation
//! ([`crate::archive::restore`]). The file is checked on its own first (as
//! `verify --archive` does), then against what the store recorded when it
//! dropped the range; the partition is held from retention for the hold (30
//! days unless told), then retention may drop it again. Runs as the store's
//! owner, like `setup`.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::archive;
use crate::config::Config;
use crate::store::retention::Retention;

/// What the command line asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct Request {
    /// The archive file, as retention wrote it (`<source>-<from>-<to>.jsonl.zst[.age]`).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The age identity file (secret key) that decrypts an encrypted archive.
    #[arg(long, value_name = "AGE_KEY_FILE")]
    pub identity: Option<PathBuf>,
    /// How long retention keeps the restored partition before it may drop it again: whole
    /// days, months or years ("30d", "2 months").
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = Retention::parse)]
    pub hold: Retention,
    /// The longest line (entry) to read, e.g. "4GiB"; default 1025 MiB, above any pgtrail
    /// writes. A line is held in memory while it is read: raise it only for an archive that
    /// holds an entry that long.
    #[arg(long, value_name = "SIZE", value_parser = crate::config::parse_size)]
    pub max_line: Option<u64>,
    /// Print the outcome as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Restores the archive and prints what was restored.
pub async fn run(config: &Config, request: &Request) -> Result<()> {
    let (file, identity) = (request.file.clone(), request.identity.clone());
    let max_line = request.max_line.unwrap_or(archive::MAX_LINE);
    let checked = tokio::task::spawn_blocking(move || {
        archive::check(&file, identity.as_deref(), max_line)
    })
    .await
    .context("reading the archive")?
    .map_err(|e| {
        let fix = if e.is_broken() {
            ": it cannot be restored; check it with `pgtrail verify --archive FILE` and restore \
                 the copy retention wrote"
        } else {
            ""
        };
        anyhow::anyhow!("{e}{fix}")
    })?;
    let mut client = crate::store::open(&config.store).await?;
    let restored = archive::restore(
        &mut client,
        &checked,
        request.identity.clone(),
        max_line,
        request.hold,
        crate::cli::export::os_user(),
    )
    .await?;
    if request.json {
        println!("{}", serde_json::to_string(&restored)?);
        return Ok(());
    }
    println!(
        "restored partition {} [{} .. {}): {} entries of source {} from {}",
        restored.partition,
        restored.from.to_rfc3339(),
        restored.to.to_rfc3339(),
        restored.entries,
        restored.source,
        restored.file.display()
    );
    println!(
        "held from retention until {}; recorded as event {}{}",
        restored.held_until.to_rfc3339(),
        restored.event,
        if restored.archive_recorded {
            " (the file is the one the drop recorded)"
        } else {
            ""
        }
    );
    Ok(())
}
