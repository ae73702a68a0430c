//! `/readyz`: is this process doing its job? For `pgtrail run`: a capture
//! session streams, the store answers, and capture is less than
//! `metrics.ready_max_lag` behind. For `pgtrail web`: the store answers.
//! Each check says why when it fails.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};

use super::monitor::Readings;
use crate::metrics::progress::{Session, Snapshot};

/// Which process is asking, and so which checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `pgtrail run`: streaming, store, lag.
    Capture { max_lag: Duration },
    /// `pgtrail web`: store.
    Web,
}

/// One check: passed (with figures to show), or why not.
type Check = Result<Map<String, Value>, String>;

/// Whether the process is ready, and the JSON body that says why (not).
pub fn readiness(
    role: Role,
    readings: Option<&Readings>,
    progress: &Snapshot,
    poll_every: Duration,
    now: SystemTime,
) -> (bool, Value) {
    let fresh = fresh(readings, poll_every, now);
    let mut checks: Vec<(&str, Check)> = Vec::new();
    if let Role::Capture { .. } = role {
        checks.push(("streaming", streaming(&progress.session, now)));
    }
    checks.push((
        "store",
        fresh.clone().and_then(|r| match &r.store {
            Ok(_) => Ok(Map::new()),
            Err(e) => Err(e.clone()),
        }),
    ));
    if let Role::Capture { max_lag } = role {
        checks.push(("lag", fresh.and_then(|r| lag(r, max_lag))));
    }
    let ready = checks.iter().all(|(_, c)| c.is_ok());
    let checks: Map<String, Value> = checks
        .into_iter()
        .map(|(name, check)| {
            let body = match check {
                Ok(mut figures) => {
                    figures.insert("ok".into(), Value::Bool(true));
                    Value::Object(figures)
                }
                Err(reason) => json!({"ok": false, "reason": reason}),
            };
            (name.to_owned(), body)
        })
        .collect();
    (ready, json!({"ready": ready, "checks": checks}))
}

/// The monitor's last readings, unless they are too old to go by.
fn fresh(
    readings: Option<&Readings>,
    every: Duration,
    now: SystemTime,
) -> Result<&Readings, String> {
    let r = readings.ok_or_else(|| {
        format!(
            "the monitor has not read the store yet (it polls every {} s)",
            every.as_secs()
        )
    })?;
    let age = now.duration_since(r.at).unwrap_or_default();
    // A poll may take up to its timeout on each side before it publishes.
    if age > every * 2 + Duration::from_secs(25) {
        return Err(format!(
            "the monitor's last reading is {} s old (it polls every {} s): it is stuck",
            age.as_secs(),
            every.as_secs()
        ));
    }
    Ok(r)
}

fn streaming(session: &Session, now: SystemTime) -> Check {
    let ago = |since: &SystemTime| now.duration_since(*since).unwrap_or_default().as_secs();
    match session {
        Session::Streaming { since } => {
            let mut figures = Map::new();
            figures.insert("since_seconds".into(), ago(since).into());
            Ok(figures)
        }
        Session::Starting => Err("no capture session has started yet".into()),
        Session::Down { since, reason } => {
            Err(format!("no capture session for {} s: {reason}", ago(since)))
        }
    }
}

fn lag(r: &Readings, max: Duration) -> Check {
    if let Some(Err(e)) = &r.source {
        return Err(format!("the lag is not known: {e}"));
    }
    let Some(lag) = r.lag else {
        return Err("the lag is not known: neither the checkpoint nor the slot's confirmed position could be read".into());
    };
    let mut figures = Map::new();
    figures.insert("seconds".into(), json!(lag.seconds));
    figures.insert("bytes".into(), lag.bytes.into());
    figures.insert("max_seconds".into(), max.as_secs_f64().into());
    if lag.seconds > max.as_secs_f64() {
        return Err(format!(
            "capture is {:.0} s behind the source ({} bytes of WAL), more than metrics.ready_max_lag ({} s)",
            lag.seconds,
            lag.bytes,
            max.as_secs_f64()
        ));
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::super::lag::Lag;
    use super::super::monitor::StoreReading;
    use super::*;

    const EVERY: Duration = Duration::from_secs(5);
    const CAPTURE: Role = Role::Capture {
        max_lag: Duration::from_secs(60),
    };

    fn readings(now: SystemTime, store_ok: bool, lag_seconds: f64) -> Readings {
        Readings {
            at: now,
            source: None,
            store: if store_ok {
                Ok(StoreReading {
                    checkpoint: None,
                    checkpoint_age: Duration::ZERO,
                })
            } else {
                Err("cannot connect to 127.0.0.1:5999 (database \"pgtrail\"): refused".into())
            },
            lag: Some(Lag {
                bytes: 10,
                seconds: lag_seconds,
            }),
        }
    }

    fn streaming_since(now: SystemTime) -> Snapshot {
        Snapshot {
            session: Session::Streaming { since: now },
            last_stored: None,
        }
    }

    #[test]
    fn ready_when_streaming_store_answers_and_lag_is_small() {
        let now = SystemTime::now();
        let r = readings(now, true, 2.0);
        let (ready, body) = readiness(CAPTURE, Some(&r), &streaming_since(now), EVERY, now);
        assert!(ready, "{body}");
        assert_eq!(body["checks"]["lag"]["ok"], true);
        assert_eq!(body["checks"]["lag"]["seconds"], 2.0);
        assert_eq!(body["checks"]["store"]["ok"], true);
    }

    #[test]
    fn each_failed_check_says_why() {
        let now = SystemTime::now();
        let down = Snapshot {
            session: Session::Down {
                since: now,
                reason: "the audit store did not answer".into(),
            },
            last_stored: None,
        };
        let r = readings(now, false, 300.0);
        let (ready, body) = readiness(CAPTURE, Some(&r), &down, EVERY, now);
        assert!(!ready);
        assert_eq!(body["ready"], false);
        let reason = |c: &str| {
            body["checks"][c]["reason"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        assert!(reason("streaming").contains("did not answer"), "{body}");
        assert!(reason("store").contains("cannot connect"), "{body}");
        assert!(reason("lag").contains("ready_max_lag"), "{body}");
        // No reading yet, or one too old: said as such.
        let (ready, body) = readiness(Role::Web, None, &down, EVERY, now);
        assert!(
            !ready
                && body["checks"]["store"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("not read")
        );
        assert!(body["checks"].get("streaming").is_none(), "{body}");
        let old = readings(now - Duration::from_secs(120), true, 0.0);
        let (ready, body) = readiness(Role::Web, Some(&old), &down, EVERY, now);
        assert!(
            !ready
                && body["checks"]["store"]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("stuck")
        );
    }
}
