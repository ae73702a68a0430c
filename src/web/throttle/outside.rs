//! Where the sign-in book meets the world: the client's address as the
//! budget counts it ([`client_address`]), and the events it writes to the
//! store ([`record_throttled`], [`write_summaries`], and
//! [`summarize_while_serving`], which writes each window's summaries as it
//! ends).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use super::{ThrottledNow, APPLICATION};
use crate::config::WebAuth;
use crate::store::events::{record, Category, OwnEvent};
use crate::web::AppState;

/// The address a sign-in comes from: the peer's, unless the peer is a
/// trusted proxy (`web.proxy.trusted`) that says in `X-Forwarded-For` whom it
/// forwards for: then the nearest address in that list that is not itself a
/// trusted proxy. Without `[web.proxy]`, behind a reverse proxy every
/// sign-in comes from the proxy's address.
pub fn client_address(config: &WebAuth, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    let Some(proxy) = config.proxy.as_ref().filter(|p| p.trusts(peer)) else {
        return peer;
    };
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect();
    // Each proxy appends the address it heard from: the right end is the
    // nearest, and only the entries our own proxies added can be believed.
    forwarded
        .iter()
        .rev()
        .find(|a| !proxy.trusts(**a))
        .or(forwarded.first())
        .copied()
        .unwrap_or(peer)
}

/// Records that an address has used up its budget. The throttle holds
/// whether or not the event can be written (it lives in memory, not in the
/// store); a failure to write is logged.
pub async fn record_throttled(state: &AppState, t: ThrottledNow) {
    let shown = t.client.shown();
    tracing::warn!(client = %shown, failures = t.failures, "sign-ins from this address refused for the rest of its window");
    let event = OwnEvent::new(
        Category::Session,
        "address_throttled",
        APPLICATION,
        format!(
            "sign-ins from {shown} refused for {} s after {} failed sign-ins",
            t.seconds, t.failures
        ),
    )
    .client_addr(Some(shown))
    .detail("failures", t.failures)
    .detail("seconds", t.seconds);
    let written = match state.writer().get().await {
        Ok(client) => record(&*client, &event).await.map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:?}")),
    };
    if let Err(e) = written {
        tracing::error!(error = %e, "recording a throttled address in the audit store failed");
    }
}

/// Writes the summaries that are due (every one with `all`, as the server
/// stops) in one transaction; if the store refuses, they wait for the next try.
pub async fn write_summaries(state: &AppState, all: bool) {
    let window = Duration::from_secs(state.auth().config.limits.sign_in_window_seconds);
    let due = state.sign_in_book().due(window, Instant::now(), all);
    if due.is_empty() {
        return;
    }
    let written = async {
        let mut client = state.writer().get().await.map_err(|e| format!("{e:?}"))?;
        let tx = client.transaction().await.map_err(|e| e.to_string())?;
        for event in &due {
            record(&tx, event).await.map_err(|e| e.to_string())?;
        }
        tx.commit().await.map_err(|e| e.to_string())
    }
    .await;
    match written {
        Ok(()) => tracing::debug!(events = due.len(), "failed sign-ins summarized"),
        Err(e) => {
            tracing::warn!(error = %e, "summaries of failed sign-ins could not be written; trying again later");
            state.sign_in_book().unwritten(due);
        }
    }
}

/// Writes each window's summaries soon after it ends, for the server's whole
/// life: it looks every tenth of the window (between 1 and 30 s).
pub async fn summarize_while_serving(state: AppState) {
    loop {
        let window = state.auth().config.limits.sign_in_window_seconds;
        let every = Duration::from_secs((window / 10).clamp(1, 30));
        tokio::time::sleep(every).await;
        write_summaries(&state, false).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(proxy: &str) -> WebAuth {
        let text = format!("[source]\nurl = \"postgres://a@h/db\"\n[web]\n{proxy}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        crate::config::Config::load(&path).unwrap().web_auth
    }

    #[test]
    fn forwarded_addresses_are_believed_from_trusted_proxies_only() {
        let proxied =
            config("[web.proxy]\nuser_header = \"X-User\"\ntrusted = [\"10.0.0.0/24\"]\n");
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "198.51.100.9, 203.0.113.5, 10.0.0.7".parse().unwrap(),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_address(&proxied, &h, ip("10.0.0.1")),
            ip("203.0.113.5")
        );
        assert_eq!(
            client_address(&proxied, &h, ip("192.0.2.1")),
            ip("192.0.2.1")
        );
        assert_eq!(
            client_address(&config(""), &h, ip("10.0.0.1")),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(&proxied, &HeaderMap::new(), ip("10.0.0.1")),
            ip("10.0.0.1")
        );
    }
}
