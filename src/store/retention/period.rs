//! `[store] retention`: how long entries are kept, in whole days, months or
//! years (never minutes or hours: a partition is at least a day).

use std::fmt;

/// How long the store keeps entries: a partition goes once its whole range
/// is older than this, by the store server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    Days(u32),
    Months(u32),
    Years(u32),
}

impl Retention {
    /// Parses `"400d"`, `"400 days"`, `"13 months"`, `"7y"`, …. A bare `m`
    /// is refused: it could mean minutes.
    pub fn parse(text: &str) -> Result<Retention, String> {
        let t = text.trim();
        let digits = t.chars().take_while(char::is_ascii_digit).count();
        let (number, unit) = t.split_at(digits);
        let unit = unit.trim().to_ascii_lowercase();
        let n: u32 = number.parse().map_err(|_| {
            format!("{text:?} does not start with a whole number: write e.g. \"400d\", \"13 months\" or \"7y\"")
        })?;
        if n == 0 {
            return Err(format!(
                "{text:?} would drop every entry at once: keep at least 1 day, or leave retention unset to keep everything"
            ));
        }
        let r = match unit.as_str() {
            "d" | "day" | "days" => Retention::Days(n),
            "month" | "months" => Retention::Months(n),
            "y" | "year" | "years" => Retention::Years(n),
            "m" => return Err(format!("{text:?}: write months: m could mean minutes")),
            _ => {
                return Err(format!(
                    "{text:?} has no unit retention knows: write days (d), months or years (y), e.g. \"400d\""
                ))
            }
        };
        // Far past any audit horizon, and it keeps the interval within
        // what PostgreSQL's timestamps can subtract.
        if r.approx_days() > 100 * 366 {
            return Err(format!(
                "{text:?} is more than 100 years: leave retention unset to keep everything"
            ));
        }
        Ok(r)
    }

    fn approx_days(self) -> u64 {
        match self {
            Retention::Days(n) => u64::from(n),
            Retention::Months(n) => u64::from(n) * 31,
            Retention::Years(n) => u64::from(n) * 366,
        }
    }

    /// The PostgreSQL interval, as `pgtrail.settings.retention` holds it.
    pub fn interval(self) -> String {
        match self {
            Retention::Days(n) => format!("{n} days"),
            Retention::Months(n) => format!("{n} mons"),
            Retention::Years(n) => format!("{n} years"),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retention::Days(n) => write!(f, "{n}d"),
            Retention::Months(n) => write!(f, "{n} months"),
            Retention::Years(n) => write!(f, "{n}y"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Retention;

    #[test]
    fn whole_days_months_and_years_parse() {
        assert_eq!(Retention::parse("400d"), Ok(Retention::Days(400)));
        assert_eq!(Retention::parse(" 1 day"), Ok(Retention::Days(1)));
        assert_eq!(Retention::parse("30 days"), Ok(Retention::Days(30)));
        assert_eq!(Retention::parse("13 months"), Ok(Retention::Months(13)));
        assert_eq!(Retention::parse("1month"), Ok(Retention::Months(1)));
        assert_eq!(Retention::parse("7y"), Ok(Retention::Years(7)));
        assert_eq!(Retention::parse("2 Years"), Ok(Retention::Years(2)));
        assert_eq!(Retention::Months(13).interval(), "13 mons");
        // Display reads back as the same value.
        for r in [
            Retention::Days(3),
            Retention::Months(2),
            Retention::Years(1),
        ] {
            assert_eq!(Retention::parse(&r.to_string()), Ok(r));
        }
    }

    #[test]
    fn ambiguous_or_useless_values_are_refused_with_the_fix() {
        let e = Retention::parse("6m").unwrap_err();
        assert!(e.contains("write months: m could mean minutes"), "{e}");
        for bad in ["", "d", "12", "12 weeks", "12h", "-3d", "1.5y"] {
            let e = Retention::parse(bad).unwrap_err();
            assert!(e.contains("400d") || e.contains("months"), "{bad}: {e}");
        }
        assert!(Retention::parse("0d")
            .unwrap_err()
            .contains("at least 1 day"));
        assert!(Retention::parse("101y").unwrap_err().contains("100 years"));
    }
}
