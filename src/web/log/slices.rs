//! The timeline's time slices ([`Slices`]): the range a view covers cut into
//! at most [`MAX_BARS`] slices of a round width (a minute to a year), aligned
//! to whole widths since the Unix epoch, so that bars start on round times
//! (10:00, not 10:07) and a slice's link is a clean `from`/`to` range.

use chrono::{DateTime, Utc};

/// Bars in a timeline at most.
pub const MAX_BARS: i64 = 60;

/// The round widths a slice may have, in seconds, and how each is called.
const WIDTHS: [(i64, &str); 16] = [
    (60, "minute"),
    (5 * 60, "5 minutes"),
    (10 * 60, "10 minutes"),
    (15 * 60, "15 minutes"),
    (30 * 60, "30 minutes"),
    (3600, "hour"),
    (3 * 3600, "3 hours"),
    (6 * 3600, "6 hours"),
    (12 * 3600, "12 hours"),
    (86_400, "day"),
    (2 * 86_400, "2 days"),
    (7 * 86_400, "week"),
    (14 * 86_400, "2 weeks"),
    (30 * 86_400, "30 days"),
    (91 * 86_400, "91 days"),
    (365 * 86_400, "365 days"),
];

/// A time range cut into slices of one width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slices {
    /// The range itself: at or after `since`, before `until`.
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Where the first slice starts (at or before `since`), in seconds since the epoch.
    pub origin: i64,
    /// Seconds per slice.
    pub width: i64,
    /// How a slice's width is called ("hour").
    pub unit: String,
    pub count: usize,
}

impl Slices {
    /// `[since, until)` in the narrowest round slices that need no more than [`MAX_BARS`].
    pub fn over(since: DateTime<Utc>, until: DateTime<Utc>) -> Slices {
        let until = until.max(since + chrono::Duration::seconds(1));
        let (s, u) = (since.timestamp(), until.timestamp());
        let count_for = |w: i64| {
            let origin = s.div_euclid(w) * w;
            ((u - origin + w - 1) / w).max(1)
        };
        let (width, unit) = match WIDTHS.iter().find(|(w, _)| count_for(*w) <= MAX_BARS) {
            Some((w, name)) => (*w, (*name).to_owned()),
            // Centuries: whole years, as many as it takes to fit.
            None => {
                let years = ((u - s) / (365 * 86_400) / (MAX_BARS - 1)).max(1) + 1;
                (years * 365 * 86_400, format!("{} days", years * 365))
            }
        };
        Slices {
            since,
            until,
            origin: s.div_euclid(width) * width,
            width,
            unit,
            count: count_for(width) as usize,
        }
    }

    /// The slice of a commit time given in seconds since the epoch; times
    /// outside the range (a clock step) go to the slice at its nearer end.
    pub fn index(&self, epoch: i64) -> usize {
        let i = (epoch - self.origin).div_euclid(self.width);
        i.clamp(0, self.count as i64 - 1) as usize
    }

    /// The part of the range slice `i` covers: `[start, end)`.
    pub fn bounds(&self, i: usize) -> (DateTime<Utc>, DateTime<Utc>) {
        let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or(self.since);
        let start = self.origin + i as i64 * self.width;
        (
            at(start).max(self.since),
            at(start + self.width).min(self.until),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn slices_are_round_and_few() {
        let s = Slices::over(t("2026-11-01T10:07:00Z"), t("2026-11-02T10:07:00Z"));
        assert_eq!(
            (s.width, s.unit.as_str(), s.count),
            (1800, "30 minutes", 49)
        );
        assert_eq!(
            s.bounds(0),
            (t("2026-11-01T10:07:00Z"), t("2026-11-01T10:30:00Z"))
        );
        assert_eq!(
            s.bounds(1),
            (t("2026-11-01T10:30:00Z"), t("2026-11-01T11:00:00Z"))
        );
        assert_eq!(s.bounds(48).1, t("2026-11-02T10:07:00Z"));
        assert_eq!(s.index(t("2026-11-01T10:29:59Z").timestamp()), 0);
        assert_eq!(s.index(t("2026-11-01T10:30:00Z").timestamp()), 1);
        assert_eq!(s.index(t("2020-01-01T00:00:00Z").timestamp()), 0, "clamped");
        assert_eq!(
            s.index(t("2030-01-01T00:00:00Z").timestamp()),
            48,
            "clamped"
        );
        let hour = Slices::over(t("2026-11-01T10:00:00Z"), t("2026-11-01T11:00:00Z"));
        assert_eq!((hour.width, hour.count), (60, 60));
        let month = Slices::over(t("2026-10-01T00:00:00Z"), t("2026-10-31T00:00:00Z"));
        assert_eq!((month.unit.as_str(), month.count), ("12 hours", 60));
        let ages = Slices::over(t("0001-01-01T00:00:00Z"), t("9999-01-01T00:00:00Z"));
        assert!(ages.count as i64 <= MAX_BARS, "{ages:?}");
        let empty = Slices::over(t("2026-11-01T10:00:00Z"), t("2026-11-01T10:00:00Z"));
        assert_eq!(empty.count, 1);
    }
}
