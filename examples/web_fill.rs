//! Synthetic audit entries for the web view's benchmark (`bench/web.sh`): COPY
//! text, written by pgtrail's own encoder
//! ([`pgtrail::store::writer::encode_sourced_row`]), so every column pgtrail
//! computes (`row_key`, the xxh3 hash of table and key, and the plain
//! `actor` and `client_addr` columns) is exactly what the daemon would have
//! stored. That hash is why this is a Rust program and not
//! `generate_series`: PostgreSQL has no xxh3.
//!
//!   web_fill [--entries N] [--days D] [--tables T] [--seed S] [--end UNIX_SECONDS]
//!            [--transactions-out FILE [--first-txn ID]]
//!   web_fill --copy-sql TABLE     # the COPY statement for TABLE's lines
//!
//! With `--transactions-out`, the store's layout since migration 23: the
//! transactions as rows of `pgtrail.transactions` (ids from `--first-txn`,
//! default 1, up; the caller sets `pgtrail.transactions_id_seq` past them)
//! into FILE, the entries as rows of `pgtrail.entry_rows` referencing them
//! on stdout (their ids from the table's sequence). Without it, one line per
//! entry for the view `pgtrail.entries` (every column, as the tables were
//! before migration 23: `bench/store_indexes.sh --synthetic` cuts its
//! columns from these). TABLE is `entries`, `entry_rows` or `transactions`.
//!
//! The shape, meant to look like a busy application's audit trail:
//! - `--tables` tables (default 200) in a handful of schemas, with Zipf-like
//!   popularity: a few hot tables take most writes, the rarest get a few
//!   thousand entries in 5M; integer, uuid and two-column keys; 6 to 12
//!   columns of statuses, names, emails, amounts, times and free-text notes
//!   (row images of roughly 250 to 700 bytes);
//! - transactions of 1 to 8 row changes, one context each; about 25 %
//!   INSERT, 63 % UPDATE (1 to 3 columns changed, before and after images as
//!   with REPLICA IDENTITY FULL), 12 % DELETE, and a few TRUNCATE and DDL;
//! - 300 application actors (Zipf-like; a fifth of transactions have none, so
//!   the database role stands in), 8 roles, about 250 client addresses (IPv4
//!   and IPv6; some Unix-socket sessions with none), 12 application names;
//! - commit times rising with the entries, spread evenly over `--days`
//!   (default 365) days ending at `--end` (default now): a year of audit,
//!   so that a store made with the default `month` partitions spans 13 of
//!   them and every page, count and search that reads back in time crosses
//!   partition boundaries.
//!
//! Every entry is the store's first source's (id 1, the one `setup`
//! registers). The store's partitions must cover the commit times before
//! the COPY (`fill_partitions` in bench/lib.sh makes them with
//! `pgtrail.ensure_partition`).
//!
//! Deterministic for a given seed and end time.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use bytes::BytesMut;
use chrono::{DateTime, Duration, Utc};
use pgtrail::entry::{Action, AuditEntry, Transaction};
use pgtrail::pg::lsn::Lsn;
use pgtrail::store::context::ContextColumns;
use pgtrail::store::writer::{encode_sourced_row, SOURCED_COPY_SQL};
use pgtrail::store::SourceId;
use pgtrail::table::TableName;
use pgtrail::text::push_json_string;

const SCHEMAS: [&str; 6] = ["public", "sales", "billing", "inventory", "crm", "hr"];
const NOUNS: [&str; 40] = [
    "orders",
    "order_items",
    "customers",
    "invoices",
    "payments",
    "refunds",
    "products",
    "prices",
    "stock_levels",
    "warehouses",
    "shipments",
    "returns",
    "suppliers",
    "purchase_orders",
    "contracts",
    "accounts",
    "contacts",
    "leads",
    "opportunities",
    "tickets",
    "employees",
    "departments",
    "timesheets",
    "expenses",
    "budgets",
    "ledger_lines",
    "tax_rates",
    "coupons",
    "carts",
    "reviews",
    "subscriptions",
    "plans",
    "addresses",
    "audit_notes",
    "settings",
    "api_keys",
    "sessions_archive",
    "notifications",
    "tasks",
    "documents",
];
const FIRST: [&str; 30] = [
    "alice", "bruno", "chloe", "dmitri", "emma", "farid", "grace", "hugo", "ines", "jonas", "kira",
    "liam", "maya", "nils", "olga", "pedro", "quinn", "rosa", "sven", "tara", "umar", "vera",
    "wei", "xenia", "yusuf", "zoe", "anton", "bianca", "carlos", "dana",
];
const LAST: [&str; 24] = [
    "martin",
    "schmidt",
    "rossi",
    "dubois",
    "nowak",
    "silva",
    "jensen",
    "kowalski",
    "moreau",
    "fischer",
    "garcia",
    "novak",
    "lindqvist",
    "okafor",
    "tanaka",
    "kim",
    "haddad",
    "costa",
    "meyer",
    "popescu",
    "walsh",
    "berg",
    "ivanova",
    "santos",
];
const WORDS: [&str; 64] = [
    "customer",
    "asked",
    "for",
    "a",
    "refund",
    "after",
    "delivery",
    "was",
    "late",
    "address",
    "changed",
    "by",
    "support",
    "agent",
    "priority",
    "shipping",
    "invoice",
    "corrected",
    "tax",
    "rate",
    "updated",
    "discount",
    "applied",
    "manually",
    "duplicate",
    "entry",
    "removed",
    "warehouse",
    "transfer",
    "pending",
    "approval",
    "from",
    "manager",
    "contract",
    "renewed",
    "annual",
    "plan",
    "payment",
    "failed",
    "retry",
    "scheduled",
    "card",
    "expired",
    "note",
    "follow",
    "up",
    "next",
    "week",
    "quality",
    "check",
    "passed",
    "damaged",
    "item",
    "replaced",
    "stock",
    "count",
    "adjusted",
    "inventory",
    "audit",
    "requested",
    "legal",
    "hold",
    "gdpr",
    "export",
];
const STATUSES: [&str; 9] = [
    "new",
    "pending",
    "paid",
    "shipped",
    "delivered",
    "cancelled",
    "refunded",
    "on_hold",
    "archived",
];
const ROLES: [&str; 8] = [
    "app",
    "app_admin",
    "etl",
    "reporting",
    "batch",
    "migrations",
    "postgres",
    "support",
];
const APPS: [&str; 12] = [
    "shop-web",
    "shop-api",
    "billing-worker",
    "etl-nightly",
    "psql",
    "pgAdmin 4",
    "reporting",
    "crm-sync",
    "inventory-svc",
    "admin-console",
    "DBeaver",
    "mobile-backend",
];
const SOURCES: [&str; 4] = ["web", "api", "worker", "cron"];

#[derive(Clone, Copy)]
enum Key {
    Int,
    Uuid,
    /// `{"order_id":…,"line_no":…}`
    Pair,
}

#[derive(Clone, Copy)]
enum Kind {
    Status,
    Name,
    Email,
    Amount,
    Quantity,
    Time,
    Note,
    Sku,
    Flag,
}

struct Table {
    name: TableName,
    key: Key,
    columns: Vec<(String, Kind)>,
    /// Distinct rows the table's entries touch.
    rows: u64,
}

/// Cumulative weights for Zipf-like sampling: item i has weight 1/(i+1)^s.
struct Zipf(Vec<f64>);

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut acc = 0.0;
        Zipf(
            (0..n)
                .map(|i| {
                    acc += 1.0 / ((i + 1) as f64).powf(s);
                    acc
                })
                .collect(),
        )
    }

    fn share(&self, i: usize) -> f64 {
        let prev = if i == 0 { 0.0 } else { self.0[i - 1] };
        (self.0[i] - prev) / self.0[self.0.len() - 1]
    }

    fn pick(&self, rng: &mut fastrand::Rng) -> usize {
        let x = rng.f64() * self.0[self.0.len() - 1];
        self.0.partition_point(|c| *c < x).min(self.0.len() - 1)
    }
}

/// The COPY statement for `pgtrail.entry_rows`: [`SOURCED_COPY_SQL`]'s
/// columns less the transaction's, and the transaction's id.
const ENTRY_ROWS_COPY_SQL: &str = "COPY pgtrail.entry_rows (committed_at, schema_name, table_name, \
    action, primary_key, before, after, changed_columns, row_key, details, hash, source, txn) FROM STDIN";
/// [`SOURCED_COPY_SQL`]'s fields an entry row keeps, by position.
const ENTRY_ROW_FIELDS: [usize; 12] = [0, 3, 4, 5, 6, 7, 8, 9, 11, 12, 15, 16];
/// The COPY statement for `pgtrail.transactions`: the id, then
/// [`TRANSACTION_FIELDS`].
const TRANSACTIONS_COPY_SQL: &str =
    "COPY pgtrail.transactions (id, committed_at, source, xid, lsn, \
    context, actor, client_addr) FROM STDIN";
/// [`SOURCED_COPY_SQL`]'s fields a transaction row takes, by position.
const TRANSACTION_FIELDS: [usize; 7] = [0, 16, 1, 2, 10, 13, 14];

struct Args {
    entries: u64,
    days: i64,
    tables: usize,
    seed: u64,
    end: DateTime<Utc>,
    transactions_out: Option<PathBuf>,
    first_txn: u64,
}

enum Run {
    Fill(Args),
    CopySql(&'static str),
}

fn parse_args() -> anyhow::Result<Run> {
    let mut a = Args {
        entries: 5_000_000,
        days: 365,
        tables: 200,
        seed: 42,
        end: Utc::now(),
        transactions_out: None,
        first_txn: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        if flag == "--copy-sql" {
            return Ok(Run::CopySql(match value.as_str() {
                "entries" => SOURCED_COPY_SQL,
                "entry_rows" => ENTRY_ROWS_COPY_SQL,
                "transactions" => TRANSACTIONS_COPY_SQL,
                _ => bail!("--copy-sql: {value:?} is not entries, entry_rows or transactions"),
            }));
        }
        if flag == "--transactions-out" {
            a.transactions_out = Some(PathBuf::from(value));
            continue;
        }
        let num = || {
            value
                .parse::<u64>()
                .with_context(|| format!("{flag}: {value:?} is not a whole number"))
        };
        match flag.as_str() {
            "--entries" => a.entries = num()?,
            "--days" => a.days = num()? as i64,
            "--tables" => a.tables = num()? as usize,
            "--seed" => a.seed = num()?,
            "--first-txn" => a.first_txn = num()?,
            "--end" => {
                a.end = DateTime::from_timestamp(num()? as i64, 0)
                    .with_context(|| format!("--end: {value} is out of range"))?
            }
            _ => bail!("unknown option {flag}; see the header of examples/web_fill.rs"),
        }
    }
    if a.entries == 0 || a.days == 0 || a.tables == 0 || a.first_txn == 0 {
        bail!("--entries, --days, --tables and --first-txn must be more than 0");
    }
    Ok(Run::Fill(a))
}

/// Where the lines go: one line per entry for the view, or the two tables.
enum Out {
    View,
    Tables {
        transactions: BufWriter<File>,
        next_txn: u64,
    },
}

/// Appends the fields of `line` (one line of COPY text for
/// [`SOURCED_COPY_SQL`], its newline included) at `pick` to `out` as a line,
/// with `first` before them and `last` after them. A tab inside a field is
/// escaped in COPY text, so a tab is always a separator.
fn push_fields(
    out: &mut BytesMut,
    line: &[u8],
    pick: &[usize],
    first: Option<u64>,
    last: Option<u64>,
) -> anyhow::Result<()> {
    let fields: Vec<&[u8]> = line
        .strip_suffix(b"\n")
        .unwrap_or(line)
        .split(|b| *b == b'\t')
        .collect();
    let mut sep = false;
    if let Some(n) = first {
        out.extend_from_slice(n.to_string().as_bytes());
        sep = true;
    }
    for &i in pick {
        if sep {
            out.extend_from_slice(b"\t");
        }
        let field = fields
            .get(i)
            .with_context(|| format!("an encoded entry with {} fields, not 17", fields.len()))?;
        out.extend_from_slice(field);
        sep = true;
    }
    if let Some(n) = last {
        out.extend_from_slice(b"\t");
        out.extend_from_slice(n.to_string().as_bytes());
    }
    out.extend_from_slice(b"\n");
    Ok(())
}

fn tables(n: usize, entries: u64, rng: &mut fastrand::Rng, zipf: &Zipf) -> Vec<Table> {
    let kinds = [
        Kind::Status,
        Kind::Name,
        Kind::Email,
        Kind::Amount,
        Kind::Quantity,
        Kind::Time,
        Kind::Note,
        Kind::Sku,
        Kind::Flag,
    ];
    let names = [
        "status",
        "name",
        "email",
        "amount",
        "quantity",
        "updated_at",
        "note",
        "sku",
        "active",
    ];
    (0..n)
        .map(|i| {
            let noun = NOUNS[i % NOUNS.len()];
            let schema = SCHEMAS[(i / NOUNS.len() + i) % SCHEMAS.len()];
            // Past the first lap of nouns, a suffix keeps names unique.
            let name = if i < NOUNS.len() {
                noun.to_owned()
            } else {
                format!("{noun}_{}", i / NOUNS.len() + 1)
            };
            let key = match i % 10 {
                3 => Key::Uuid,
                7 => Key::Pair,
                _ => Key::Int,
            };
            let mut columns: Vec<(String, Kind)> = Vec::new();
            let count = 5 + rng.usize(0..7);
            for c in 0..count {
                let k = (i + c * 2) % kinds.len();
                let col = if columns.iter().any(|(n, _)| n == names[k]) {
                    format!("{}_{c}", names[k])
                } else {
                    names[k].to_owned()
                };
                columns.push((col, kinds[k]));
            }
            if !columns.iter().any(|(_, k)| matches!(k, Kind::Note)) {
                columns.push(("note".into(), Kind::Note));
            }
            let expected = zipf.share(i) * entries as f64;
            Table {
                name: TableName::new(schema, name),
                key,
                columns,
                rows: ((expected / 4.0) as u64).max(50),
            }
        })
        .collect()
}

fn key_json(t: &Table, row: u64) -> String {
    match t.key {
        Key::Int => format!("{{\"id\":{}}}", row + 1),
        Key::Uuid => {
            let h = xxhash_like(row ^ 0x9e37_79b9_7f4a_7c15);
            format!(
                "{{\"id\":\"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}\"}}",
                h >> 32,
                (h >> 16) & 0xffff,
                h & 0xfff,
                (h >> 20) & 0xfff,
                xxhash_like(row) & 0xffff_ffff_ffff
            )
        }
        Key::Pair => format!(
            "{{\"order_id\":{},\"line_no\":{}}}",
            row / 5 + 1,
            row % 5 + 1
        ),
    }
}

/// A cheap, stable mix of a number (splitmix64's finaliser).
fn xxhash_like(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn value(kind: Kind, rng: &mut fastrand::Rng, at: &DateTime<Utc>) -> String {
    let mut out = String::new();
    match kind {
        Kind::Status => push_json_string(&mut out, STATUSES[rng.usize(..STATUSES.len())]),
        Kind::Name => push_json_string(
            &mut out,
            &format!(
                "{} {}",
                capitalise(FIRST[rng.usize(..FIRST.len())]),
                capitalise(LAST[rng.usize(..LAST.len())])
            ),
        ),
        Kind::Email => push_json_string(
            &mut out,
            &format!(
                "{}.{}{}@example.{}",
                FIRST[rng.usize(..FIRST.len())],
                LAST[rng.usize(..LAST.len())],
                rng.u32(1..1000),
                ["com", "org", "net", "de"][rng.usize(..4)]
            ),
        ),
        Kind::Amount => push_json_string(
            &mut out,
            &format!("{}.{:02}", rng.u32(0..5000), rng.u32(0..100)),
        ),
        Kind::Quantity => out.push_str(&rng.u32(0..500).to_string()),
        Kind::Time => push_json_string(
            &mut out,
            &(*at - Duration::seconds(rng.i64(0..86_400 * 90)))
                .format("%Y-%m-%d %H:%M:%S%.6f+00")
                .to_string(),
        ),
        Kind::Note => {
            let n = rng.usize(4..16);
            let text = (0..n)
                .map(|_| WORDS[rng.usize(..WORDS.len())])
                .collect::<Vec<_>>()
                .join(" ");
            push_json_string(&mut out, &text);
        }
        Kind::Sku => push_json_string(
            &mut out,
            &format!(
                "SKU-{:05}-{}",
                rng.u32(0..100_000),
                ["A", "B", "C", "X"][rng.usize(..4)]
            ),
        ),
        Kind::Flag => out.push_str(if rng.bool() { "true" } else { "false" }),
    }
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A row image: the key columns, then the table's columns.
fn row_image(t: &Table, key: &str, values: &[String]) -> String {
    // The key object's members, without its braces, lead the row.
    let mut out = String::with_capacity(512);
    out.push_str(&key[..key.len() - 1]);
    for ((name, _), v) in t.columns.iter().zip(values) {
        out.push(',');
        push_json_string(&mut out, name);
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

struct People {
    actors: Vec<String>,
    actor_zipf: Zipf,
    ips: Vec<String>,
}

fn context(rng: &mut fastrand::Rng, p: &People) -> String {
    let role = ROLES[rng.usize(..ROLES.len())];
    let actor = (rng.u8(..100) >= 20).then(|| p.actors[p.actor_zipf.pick(rng)].as_str());
    let ip = (rng.u8(..100) >= 6).then(|| p.ips[rng.usize(..p.ips.len())].as_str());
    let app = APPS[rng.usize(..APPS.len())];
    let source = (rng.u8(..100) >= 30).then(|| SOURCES[rng.usize(..SOURCES.len())]);
    let remarks = (rng.u8(..100) < 2).then(|| format!("ticket #{}", rng.u32(1000..99_999)));
    let mut out = String::with_capacity(240);
    let field = |out: &mut String, name: &str, v: Option<&str>, first: bool| {
        if !first {
            out.push(',');
        }
        push_json_string(out, name);
        out.push(':');
        match v {
            Some(v) => push_json_string(out, v),
            None => out.push_str("null"),
        }
    };
    out.push('{');
    field(&mut out, "db_user", Some(role), true);
    field(&mut out, "client_addr", ip, false);
    field(&mut out, "application_name", Some(app), false);
    field(&mut out, "actor", actor, false);
    field(&mut out, "source", source, false);
    field(&mut out, "remarks", remarks.as_deref(), false);
    field(&mut out, "current_user", Some(role), false);
    out.push_str(&format!(
        ",\"client_port\":{},\"backend_pid\":{}}}",
        if ip.is_some() {
            rng.u32(30_000..65_000).to_string()
        } else {
            "null".into()
        },
        rng.u32(1000..400_000)
    ));
    out
}

fn main() -> anyhow::Result<()> {
    let args = match parse_args()? {
        Run::CopySql(sql) => {
            println!("{sql}");
            return Ok(());
        }
        Run::Fill(args) => args,
    };
    let mut layout = match &args.transactions_out {
        None => Out::View,
        Some(path) => Out::Tables {
            transactions: BufWriter::with_capacity(
                1 << 20,
                File::create(path)
                    .with_context(|| format!("--transactions-out: creating {}", path.display()))?,
            ),
            next_txn: args.first_txn,
        },
    };
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let table_zipf = Zipf::new(args.tables, 1.0);
    let tables = tables(args.tables, args.entries, &mut rng, &table_zipf);
    let people = People {
        actors: (0..300)
            .map(|i| {
                format!(
                    "{}.{}{}",
                    FIRST[i % FIRST.len()],
                    LAST[(i / FIRST.len() + i) % LAST.len()],
                    if i >= FIRST.len() * LAST.len() {
                        i.to_string()
                    } else {
                        String::new()
                    }
                )
            })
            .collect(),
        actor_zipf: Zipf::new(300, 0.8),
        ips: (0..250)
            .map(|i| match i % 10 {
                0..=5 => format!("10.{}.{}.{}", 1 + i % 4, i / 4 % 256, 10 + i % 200),
                6..=8 => format!("192.168.{}.{}", i % 8, 20 + i),
                _ => format!("2001:db8:{:x}::{:x}", i % 16, 100 + i),
            })
            .collect(),
    };

    let start = args.end - Duration::days(args.days);
    let span_us = (args.end - start)
        .num_microseconds()
        .context("--days is too large")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut buf = BytesMut::with_capacity(8 << 20);
    let mut line = BytesMut::with_capacity(4096);
    let mut txn_line = BytesMut::with_capacity(1024);
    // The capture chain, from an empty store's head, as the daemon would write it.
    let mut prev = pgtrail::store::chain::GENESIS;
    let mut written = 0u64;
    let mut xid = 10_000u64;
    let mut lsn = 0x1_0000_0000u64;
    while written < args.entries {
        let size = (1 + rng.usize(0..8).min(rng.usize(0..8))) as u64;
        let size = size.min(args.entries - written);
        // Commit times rise with the entries, with a little jitter inside each step.
        let at_us = span_us as f64 * (written as f64 + rng.f64() * 0.9) / args.entries as f64;
        let at = start + Duration::microseconds(at_us as i64);
        xid += 1 + rng.u64(0..3);
        lsn += 200 + rng.u64(0..4000);
        let txn = Arc::new(Transaction {
            xid,
            committed_at: at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string(),
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 64),
        });
        let ctx: Arc<str> = Arc::from(context(&mut rng, &people));
        let cols = ContextColumns::of(&ctx);
        let t = &tables[table_zipf.pick(&mut rng)];
        let txn_id = match &mut layout {
            Out::View => None,
            Out::Tables { next_txn, .. } => {
                *next_txn += 1;
                Some(*next_txn - 1)
            }
        };
        for i in 0..size {
            let roll = rng.u32(0..10_000);
            let (action, table) = match roll {
                0..=2 => (Action::Truncate, t),
                3..=4 => (Action::Ddl, t),
                5..=2504 => (Action::Insert, t),
                2505..=8804 => (Action::Update, t),
                _ => (Action::Delete, t),
            };
            let row = rng.u64(0..table.rows);
            let key = key_json(table, row);
            let values: Vec<String> = table
                .columns
                .iter()
                .map(|(_, k)| value(*k, &mut rng, &at))
                .collect();
            let image = row_image(table, &key, &values);
            let entry = match action {
                Action::Insert | Action::Delete => {
                    let insert = action == Action::Insert;
                    AuditEntry {
                        txn: txn.clone(),
                        table: table.name.clone(),
                        action,
                        primary_key: Some(key),
                        before: (!insert).then(|| image.clone()),
                        after: insert.then_some(image),
                        changed_columns: None,
                        context: ctx.clone(),
                        details: None,
                    }
                }
                Action::Update => {
                    let mut after_values = values.clone();
                    let changes = 1 + rng.usize(0..3).min(rng.usize(0..3));
                    let mut changed: Vec<usize> = Vec::new();
                    for _ in 0..changes {
                        let c = rng.usize(..table.columns.len());
                        if !changed.contains(&c) {
                            changed.push(c);
                            after_values[c] = value(table.columns[c].1, &mut rng, &at);
                        }
                    }
                    changed.sort_unstable();
                    let mut cols = String::from("[");
                    for (i, c) in changed.iter().enumerate() {
                        if i > 0 {
                            cols.push(',');
                        }
                        push_json_string(&mut cols, &table.columns[*c].0);
                    }
                    cols.push(']');
                    AuditEntry {
                        txn: txn.clone(),
                        table: table.name.clone(),
                        action,
                        after: Some(row_image(table, &key, &after_values)),
                        primary_key: Some(key),
                        before: Some(image),
                        changed_columns: Some(cols),
                        context: ctx.clone(),
                        details: None,
                    }
                }
                Action::Truncate => AuditEntry {
                    txn: txn.clone(),
                    table: table.name.clone(),
                    action,
                    primary_key: None,
                    before: None,
                    after: None,
                    changed_columns: None,
                    context: ctx.clone(),
                    details: Some(r#"{"restart_identity":false,"cascade":false}"#.into()),
                },
                _ => {
                    let mut after = String::from("{\"command_tag\":\"ALTER TABLE\",\"object_type\":\"table\",\"object_identity\":");
                    push_json_string(&mut after, &table.name.quoted());
                    after.push_str(",\"sql\":");
                    push_json_string(
                        &mut after,
                        &format!(
                            "ALTER TABLE {} ADD COLUMN IF NOT EXISTS extra_{} text",
                            table.name.quoted(),
                            rng.u32(0..1000)
                        ),
                    );
                    after.push('}');
                    AuditEntry {
                        txn: txn.clone(),
                        table: table.name.clone(),
                        action,
                        primary_key: None,
                        before: None,
                        after: Some(after),
                        changed_columns: None,
                        context: ctx.clone(),
                        details: None,
                    }
                }
            };
            let micros = pgtrail::store::chain::commit_time_micros(&entry.txn.committed_at)
                .context("a generated commit time that the chain cannot read")?;
            prev = pgtrail::store::writer::content(&entry, micros).hash(&prev);
            match (&mut layout, txn_id) {
                (Out::Tables { transactions, .. }, Some(id)) => {
                    line.clear();
                    encode_sourced_row(&entry, &cols, &prev, SourceId(1), &mut line);
                    if i == 0 {
                        txn_line.clear();
                        push_fields(&mut txn_line, &line, &TRANSACTION_FIELDS, Some(id), None)?;
                        transactions
                            .write_all(&txn_line)
                            .context("writing to --transactions-out")?;
                    }
                    push_fields(&mut buf, &line, &ENTRY_ROW_FIELDS, None, Some(id))?;
                }
                _ => encode_sourced_row(&entry, &cols, &prev, SourceId(1), &mut buf),
            }
            written += 1;
        }
        if buf.len() >= 4 << 20 {
            out.write_all(&buf).context("writing COPY text to stdout")?;
            buf.clear();
        }
    }
    out.write_all(&buf).context("writing COPY text to stdout")?;
    out.flush().context("writing COPY text to stdout")?;
    if let Out::Tables {
        mut transactions, ..
    } = layout
    {
        transactions
            .flush()
            .context("writing to --transactions-out")?;
    }
    Ok(())
}
