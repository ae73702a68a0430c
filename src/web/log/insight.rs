//! What the log page shows to speed an investigation beside its entries
//! ([`Insight`], one field of the page): the search box's line, whether
//! pgtrail's own events are left out (with the link that shows them), and
//! where the view's facets and timeline are ([`super::breakdown`]: counted
//! apart, so that the page never waits for them); [`box_submitted`] and
//! [`canonical`] turn a submitted search box into the URL the filter form
//! would have given.

use super::breakdown;
use crate::web::query::{search, url, Events, LogQuery};

pub struct Insight {
    /// The view's filters as a line for the search box.
    pub search: String,
    /// The one asking may see pgtrail's own events: the form offers them.
    pub events_offered: bool,
    pub events_shown: bool,
    /// The view leaves out events the one asking could see: the view with them.
    pub events_hidden: Option<String>,
    /// The view's breakdown (facets and timeline) as a page, and as the
    /// fragment the page's script loads.
    pub breakdown_url: String,
    pub breakdown_part_url: String,
}

/// The page's insight into `q`.
pub fn of(q: &LogQuery) -> Insight {
    let offered = q.filter.scope.sees_events();
    let events_hidden = (offered && q.filter.hides_events()).then(|| {
        let mut with = q.first_page();
        with.filter.events = Events::Shown;
        canonical(&with)
    });
    let (breakdown_url, breakdown_part_url) = breakdown::urls(q);
    Insight {
        search: search::render(&q.filter.to_pairs()),
        events_offered: offered,
        events_shown: q.filter.events == Events::Shown,
        events_hidden,
        breakdown_url,
        breakdown_part_url,
    }
}

/// The request came from the search box (it has a `search` parameter).
pub fn box_submitted(raw: Option<&str>) -> bool {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).any(|(name, _)| name == "search")
}

/// The URL of `q`'s view (on its first page) with the parameters the filter form sets.
pub fn canonical(q: &LogQuery) -> String {
    let mut pairs = q.to_pairs();
    if q.live {
        pairs.push(("live", "1".to_owned()));
    }
    url("/", &pairs)
}
