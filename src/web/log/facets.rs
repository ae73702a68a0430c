//! The facets and the timeline as the log page shows them ([`Facets`],
//! `templates/facets.html` and `templates/timeline.html`): the ten most
//! frequent actions, tables, actors and sources of the view's matches, each a
//! link that narrows the view to that value, and the matches per time slice
//! as the bars of an inline SVG, each a link to its slice. Server-rendered,
//! no script. When the count ran out of time ([`super::tally`]) every number
//! is marked as a lower bound and the page says how far back it counted; when
//! there is no count at all (busy, or a failure) the page says so and shows
//! its entries as ever.

use chrono::{DateTime, Utc};

use super::rows::short_time;
use super::slices::Slices;
use super::tally::{tally, NoTally, Tally};
use crate::entry::Action;
use crate::table::TableName;
use crate::web::event::thousands;
use crate::web::query::{table_param, LogQuery, Resolved};
use crate::web::AppState;

/// Values shown per facet.
const TOP: usize = 10;

/// One value of a facet.
pub struct FacetItem {
    pub label: String,
    /// `1,204`, or `≥ 1,204` when counting stopped early.
    pub count: String,
    /// The view narrowed to this value; `None` where no filter can say it (no actor).
    pub url: Option<String>,
}

pub struct FacetGroup {
    pub name: &'static str,
    pub items: Vec<FacetItem>,
    /// How many more values the facet has beyond those shown.
    pub more: usize,
}

/// One bar of the timeline, in the SVG's units (a slice is 10 wide, the chart 100 high).
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub height: u32,
    pub url: Option<String>,
    /// "2026-11-01 10:00 to 11:00: 1,204 entries".
    pub label: String,
    /// `counted`, `partial` (counting stopped within it), or `skipped` (before it stopped).
    pub class: &'static str,
}

pub struct Timeline {
    pub bars: Vec<Bar>,
    /// The SVG's width: 10 per slice.
    pub width: usize,
    pub start: String,
    pub end: String,
    /// The same as RFC 3339, for `<time datetime>`: the page's script shows
    /// them in the reader's zone when asked.
    pub start_at: String,
    pub end_at: String,
    /// "hour": what one bar covers.
    pub unit: String,
    pub peak: String,
}

/// What the page shows of the facets.
pub struct Facets {
    /// Why there are none, if there are none.
    pub missing: &'static str,
    pub groups: Vec<FacetGroup>,
    pub timeline: Option<Timeline>,
    /// Counting stopped at its time budget after reading the matches back to
    /// this time: as shown, and as RFC 3339.
    pub stopped_at: Option<(String, String)>,
    pub counted: String,
}

impl Facets {
    fn missing(why: &'static str) -> Facets {
        Facets {
            missing: why,
            groups: Vec::new(),
            timeline: None,
            stopped_at: None,
            counted: String::new(),
        }
    }
}

/// Counts the facets of `q` within their budget and builds what the page shows.
pub async fn load(state: &AppState, q: &LogQuery, r: &Resolved, now: DateTime<Utc>) -> Facets {
    match tally(state, q, r, now).await {
        Ok(t) => Facets::of(&t, q),
        Err(NoTally::Busy) => Facets::missing(
            "The breakdown was left out: the server is busy with other searches. Refresh to try again.",
        ),
        Err(NoTally::Failed) => Facets::missing(
            "The breakdown could not be counted (the server log says why); the entries below are complete.",
        ),
    }
}

fn count_text(n: i64, partial: bool) -> String {
    if partial {
        format!("≥ {}", thousands(n))
    } else {
        thousands(n)
    }
}

/// The `TOP` largest of `counts`, largest first (ties by label), as items.
fn group<K: Clone + Ord>(
    name: &'static str,
    counts: &std::collections::HashMap<K, i64>,
    partial: bool,
    item: impl Fn(&K) -> (String, Option<String>),
) -> FacetGroup {
    let mut all: Vec<(&K, &i64)> = counts.iter().filter(|(_, n)| **n > 0).collect();
    all.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let items = all
        .iter()
        .take(TOP)
        .map(|(k, n)| {
            let (label, url) = item(k);
            FacetItem {
                label,
                count: count_text(**n, partial),
                url,
            }
        })
        .collect();
    FacetGroup {
        name,
        items,
        more: all.len().saturating_sub(TOP),
    }
}

impl Facets {
    fn of(t: &Tally, q: &LogQuery) -> Facets {
        let partial = t.stopped_at.is_some();
        let groups = vec![
            group("Action", &t.actions, partial, |a| {
                let action = a.parse::<Action>().ok();
                let link = action.map(|a| q.first_page_url(|n| n.filter.actions = vec![a]));
                (a.clone(), link)
            }),
            group("Table", &t.tables, partial, |(s, n)| {
                let table = TableName::new(s.clone(), n.clone());
                let link = q.first_page_url(|v| v.filter.tables = vec![table.clone()]);
                (table_param(&table), Some(link))
            }),
            group("Actor", &t.actors, partial, |a| {
                if a.is_empty() {
                    ("none recorded".to_owned(), None)
                } else {
                    let link = q.first_page_url(|n| n.filter.actor = Some(a.clone()));
                    (a.clone(), Some(link))
                }
            }),
            group("Source", &t.sources, partial, |s| match s {
                Some(s) if !s.trim().is_empty() => {
                    let link = q.first_page_url(|n| n.filter.source = Some(s.clone()));
                    (s.clone(), Some(link))
                }
                _ => ("none recorded".to_owned(), None),
            }),
        ];
        Facets {
            missing: "",
            groups,
            timeline: t.slices.as_ref().map(|s| timeline(t, s, q)),
            stopped_at: t
                .stopped_at
                .as_ref()
                .map(|at| (short_time(at), rfc3339(at))),
            counted: count_text(t.total, partial),
        }
    }
}

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `2026-11-01 10:00` (UTC), to the minute: slices start on whole minutes.
fn minute(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

fn timeline(t: &Tally, s: &Slices, q: &LogQuery) -> Timeline {
    let peak = t.bars.iter().copied().max().unwrap_or(0).max(1);
    let bars = t
        .bars
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let (start, end) = s.bounds(i);
            let class = match t.stopped_at {
                Some(stop) if end <= stop => "skipped",
                Some(stop) if start < stop => "partial",
                _ => "counted",
            };
            // A bar of matches is at least 3 high, so a slice with one entry shows.
            let height = if n == 0 {
                0
            } else {
                ((n * 100 / peak) as u32).max(3)
            };
            let counted = match class {
                "skipped" => "not counted (counting stopped later)".to_owned(),
                "partial" => format!("at least {} entries", thousands(n)),
                _ if n == 1 => "1 entry".to_owned(),
                _ => format!("{} entries", thousands(n)),
            };
            let url = (n > 0 || class == "skipped").then(|| {
                let text = |t: &DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
                q.first_page_url(|v| {
                    v.filter.last = None;
                    v.filter.from = Some((text(&start), start));
                    v.filter.to = Some((text(&end), end));
                })
            });
            Bar {
                x: i as u32 * 10,
                y: 100 - height,
                height,
                url,
                label: format!("{} to {} UTC: {counted}", minute(&start), minute(&end)),
                class,
            }
        })
        .collect();
    Timeline {
        bars,
        width: s.count * 10,
        start: minute(&s.since),
        end: minute(&s.until),
        start_at: rfc3339(&s.since),
        end_at: rfc3339(&s.until),
        unit: s.unit.clone(),
        peak: thousands(peak),
    }
}
