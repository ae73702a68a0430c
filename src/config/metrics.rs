//! `[metrics]`: where `/metrics`, `/healthz` and `/readyz` are served (apart
//! from the web view, without a sign-in), how often the monitor reads the
//! slot, and how much lag `/readyz` tolerates.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `metrics.listen` when not set: loopback, and a port none of the exporters
/// a PostgreSQL host usually runs takes (node_exporter 9100,
/// postgres_exporter 9187, pgbouncer_exporter 9127).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9847";
/// `metrics.ready_max_lag` when not set.
pub const DEFAULT_READY_MAX_LAG: Duration = Duration::from_secs(60);
/// `metrics.poll_interval` when not set.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: Option<String>,
    ready_max_lag: Option<RawDuration>,
    poll_interval: Option<RawDuration>,
}

/// A duration as written: `"90s"`, `"5m"`, `"1h"`, `"500ms"`, or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// `[metrics]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where the endpoints listen; `None` when turned off (`listen = ""` or `"off"`).
    pub listen: Option<SocketAddr>,
    /// `/readyz` fails once capture is further behind than this.
    pub ready_max_lag: Duration,
    /// How often the monitor reads the slot and the store.
    pub poll_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: DEFAULT_LISTEN.parse().ok(),
            ready_max_lag: DEFAULT_READY_MAX_LAG,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

pub(super) fn metrics(raw: &RawMetrics, path: &Path) -> Result<MetricsConfig, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let listen = match raw.listen.as_deref().map(str::trim) {
        None => MetricsConfig::default().listen,
        Some("" | "off") => None,
        Some(text) => Some(text.parse::<SocketAddr>().map_err(|_| {
            invalid(
                "metrics.listen",
                format!(
                    "{:?} is not an address:port; write e.g. \"{DEFAULT_LISTEN}\" (loopback), \
                     \"0.0.0.0:9847\" (every interface, for a Prometheus on another host), or \"\" to turn \
                     the metrics and health endpoints off",
                    crate::text::clip(text)
                ),
            )
        })?),
    };
    let ready_max_lag = duration(
        raw.ready_max_lag.as_ref(),
        DEFAULT_READY_MAX_LAG,
        Duration::from_secs(1),
    )
    .map_err(|m| invalid("metrics.ready_max_lag", m))?;
    let poll_interval = duration(
        raw.poll_interval.as_ref(),
        DEFAULT_POLL_INTERVAL,
        Duration::from_secs(1),
    )
    .map_err(|m| invalid("metrics.poll_interval", m))?;
    if poll_interval > Duration::from_secs(300) {
        return Err(invalid(
            "metrics.poll_interval",
            "must be at most 5m: the lag figures and /readyz are only as fresh as it".into(),
        ));
    }
    Ok(MetricsConfig {
        listen,
        ready_max_lag,
        poll_interval,
    })
}

/// A duration from the file, `default` when absent, at least `min`.
fn duration(
    raw: Option<&RawDuration>,
    default: Duration,
    min: Duration,
) -> Result<Duration, String> {
    let value = match raw {
        None => default,
        Some(RawDuration::Seconds(s)) => Duration::from_secs(*s),
        Some(RawDuration::Text(text)) => parse_duration(text)?,
    };
    if value < min {
        return Err(format!("must be at least {}", shown(min)));
    }
    Ok(value)
}

/// `"90s"`, `"5m"`, `"2h"`, `"500ms"`: one number and one unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let wrong = || {
        format!(
            "{:?} is not a duration: write a number and a unit, like \"30s\", \"5m\", \"1h\" or \"500ms\"",
            crate::text::clip(text)
        )
    };
    let (n, unit) = super::number_and_unit(text).ok_or_else(wrong)?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(wrong()),
    };
    millis.map(Duration::from_millis).ok_or_else(wrong)
}

/// A duration as the config writes it.
fn shown(d: Duration) -> String {
    match d.as_millis() {
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, load, SOURCE};
    use super::*;

    #[test]
    fn defaults_are_loopback_a_minute_and_five_seconds() {
        let c = load(SOURCE).unwrap();
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.metrics.listen.unwrap().to_string(), DEFAULT_LISTEN);
        assert!(c.metrics.listen.unwrap().ip().is_loopback());
    }

    #[test]
    fn listen_can_be_turned_off_and_durations_take_units_or_seconds() {
        let c = load(&format!(
            "{SOURCE}[metrics]\nlisten = \"\"\nready_max_lag = \"2m\"\npoll_interval = 2\n"
        ))
        .unwrap();
        assert_eq!(c.metrics.listen, None);
        assert_eq!(c.metrics.ready_max_lag, Duration::from_secs(120));
        assert_eq!(c.metrics.poll_interval, Duration::from_secs(2));
        let c = load(&format!("{SOURCE}[metrics]\nlisten = \"off\"\n")).unwrap();
        assert_eq!(c.metrics.listen, None);
        let c = load(&format!("{SOURCE}[metrics]\nlisten = \"[::1]:9000\"\n")).unwrap();
        assert_eq!(c.metrics.listen.unwrap().to_string(), "[::1]:9000");
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration(" 1h "), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn wrong_values_name_the_key_and_say_what_to_write() {
        let e = error(&format!("{SOURCE}[metrics]\nlisten = \"localhost\"\n"));
        assert!(
            e.contains("metrics.listen") && e.contains("127.0.0.1:9847"),
            "{e}"
        );
        for bad in [
            "\"5 minutes\"",
            "\"m\"",
            "\"-5s\"",
            "\"5d\"",
            "\"99999999999999999999h\"",
        ] {
            let e = error(&format!("{SOURCE}[metrics]\nready_max_lag = {bad}\n"));
            assert!(
                e.contains("metrics.ready_max_lag") && e.contains("\"30s\""),
                "{bad}: {e}"
            );
        }
        let e = error(&format!("{SOURCE}[metrics]\npoll_interval = \"200ms\"\n"));
        assert!(
            e.contains("metrics.poll_interval") && e.contains("at least 1s"),
            "{e}"
        );
        let e = error(&format!("{SOURCE}[metrics]\npoll_interval = \"1h\"\n"));
        assert!(e.contains("at most 5m"), "{e}");
        let e = error(&format!("{SOURCE}[metrics]\nport = 9\n"));
        assert!(e.contains("port"), "{e}");
    }
}
