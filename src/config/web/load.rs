//! `[web]`'s keys for load ([`WebLoad`]): how many store connections the
//! pages hold, how many of them slow work (free-text search, counting
//! matches) may take, and how long a request may wait for one before it is
//! refused as busy (`503` with `Retry-After`) instead of queued without end.

use std::path::Path;
use std::time::Duration;

use super::super::ConfigError;
use super::RawWeb;

/// Store connections the pages hold at most, by default.
const DEFAULT_CONNECTIONS: u32 = 8;
/// Of those, the most slow work may hold, by default: two searches at once
/// already keep two of a small store server's cores busy.
const DEFAULT_SLOW_CONNECTIONS: u32 = 2;
/// How long a request may wait for a connection, by default.
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);
/// Bounds of `max_wait`: shorter refuses requests that would have been
/// served a moment later; longer keeps people looking at a blank page.
const MAX_WAIT_RANGE: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(60));

/// How the web view shares its store connections, validated. Read at start:
/// a reload keeps the running ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLoad {
    /// Store connections the pages hold at most (sign-ins and sessions have
    /// two more of their own, and each download one).
    pub connections: u32,
    /// Of those, the most that slow work may hold at once, so that the rest
    /// always serve the cheap pages (entries, first pages, the API).
    pub slow_connections: u32,
    /// A request that has waited this long for a connection is answered
    /// `503 Service Unavailable` with `Retry-After`.
    pub max_wait: Duration,
}

impl Default for WebLoad {
    fn default() -> Self {
        WebLoad {
            connections: DEFAULT_CONNECTIONS,
            slow_connections: DEFAULT_SLOW_CONNECTIONS,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// `web.connections`, `web.slow_connections` and `web.max_wait`, checked.
pub(super) fn load(raw: &RawWeb, path: &Path) -> Result<WebLoad, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let connections = raw.connections.unwrap_or(DEFAULT_CONNECTIONS);
    let slow_connections = raw.slow_connections.unwrap_or(DEFAULT_SLOW_CONNECTIONS);
    if connections < 2 {
        return Err(invalid(
            "web.connections",
            "must be at least 2: one for slow work and one that cheap pages never wait behind it for".into(),
        ));
    }
    if slow_connections == 0 || slow_connections >= connections {
        return Err(invalid(
            "web.slow_connections",
            format!(
                "must be at least 1 and less than web.connections ({connections}), so that cheap pages \
                 keep connections of their own; it is {slow_connections}"
            ),
        ));
    }
    let max_wait = match &raw.max_wait {
        None => DEFAULT_MAX_WAIT,
        Some(toml::Value::Integer(s)) if *s >= 0 => Duration::from_secs(s.unsigned_abs()),
        Some(toml::Value::String(text)) => {
            crate::config::parse_duration(text).map_err(|e| invalid("web.max_wait", e))?
        }
        Some(other) => {
            return Err(invalid(
                "web.max_wait",
                format!(
                "{other} is not a duration: write a number and a unit, like \"2s\" or \"500ms\""
            ),
            ))
        }
    };
    let (least, most) = MAX_WAIT_RANGE;
    if max_wait < least || max_wait > most {
        return Err(invalid(
            "web.max_wait",
            format!(
                "must be between {} ms and {} s, it is {} ms",
                least.as_millis(),
                most.as_secs(),
                max_wait.as_millis()
            ),
        ));
    }
    Ok(WebLoad {
        connections,
        slow_connections,
        max_wait,
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::tests::{load, SOURCE};
    use super::*;

    #[test]
    fn load_keys_have_defaults_and_are_checked() {
        assert_eq!(load(SOURCE).unwrap().web_auth.load, WebLoad::default());
        let c = load(&format!(
            "{SOURCE}[web]\nconnections = 3\nslow_connections = 1\nmax_wait = \"250ms\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.web_auth.load,
            WebLoad {
                connections: 3,
                slow_connections: 1,
                max_wait: Duration::from_millis(250)
            }
        );
        let c = load(&format!("{SOURCE}[web]\nmax_wait = 5\n")).unwrap();
        assert_eq!(c.web_auth.load.max_wait, Duration::from_secs(5));
        // The refusals are among those of the other [web] keys (`super::tests`).
    }
}
