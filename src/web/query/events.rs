//! pgtrail's own events (action `EVENT`: sign-ins, exports, users added…) in
//! the log: left out of a view unless it asks for them, as an audit log
//! keeps its own housekeeping apart from the changes people look for.
//!
//! A view asks for them with `events=shown` (the form's checkbox, the box's
//! `events:shown`), with an action filter that names `EVENT`, or with a
//! table filter (every event is in a `pgtrail.*` table, so naming one of
//! those asks for its events, and naming any other table leaves them out
//! anyway), or with a `db` filter naming `pgtrail`, the source of every
//! event. A URL that does not say ([`Events::Omitted`]) hides them on the
//! log page, in its live stream and in its exports; the API lists them unless
//! asked not to, as it did before the page hid them, so that what a SIEM
//! pulls does not change. A filter built in code (the CLI's export, a row's
//! history) has no rule about events ([`Events::Unfiltered`]).
//!
//! Who may see events at all is the [`super::Scope`]'s business, not this.

/// Whether a view shows pgtrail's own events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Events {
    /// No rule: a filter built in code.
    #[default]
    Unfiltered,
    /// A URL that does not say: the log page's default, hidden (the API
    /// lists them, as it always has: `api::list`).
    Omitted,
    /// `events=hidden`.
    Hidden,
    /// `events=shown`: shown among the other entries.
    Shown,
}

impl Events {
    /// The `events` parameter's value.
    /// Whether a view with this setting leaves events out by a condition of
    /// its own: they are not asked for, and no action, table or source
    /// filter (`decided`) decides about them already.
    pub fn hide(self, decided: bool) -> bool {
        matches!(self, Events::Omitted | Events::Hidden) && !decided
    }

    pub fn parse(value: &str) -> Result<Events, String> {
        match value {
            "shown" => Ok(Events::Shown),
            "hidden" => Ok(Events::Hidden),
            _ => Err(format!(
                "events: {:?} is not shown or hidden (events=shown adds pgtrail's own events to the view)",
                crate::text::clip(value)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_left_out_only_where_nothing_else_decides() {
        assert!(Events::Omitted.hide(false));
        assert!(Events::Hidden.hide(false));
        assert!(
            !Events::Hidden.hide(true),
            "an action or table filter decides"
        );
        assert!(!Events::Shown.hide(false));
        assert!(!Events::Unfiltered.hide(false), "a filter built in code");
        assert_eq!(Events::parse("shown"), Ok(Events::Shown));
        assert!(Events::parse("all")
            .unwrap_err()
            .contains("shown or hidden"));
    }
}
