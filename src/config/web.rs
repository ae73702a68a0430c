//! `[web]`: where the web view listens and who may use it: the auth mode,
//! session limits, lockout after failed sign-ins, how much one client may ask
//! for at once ([`WebLimits`]: live streams, stalled downloads, failed sign-ins
//! per address), and `[web.proxy]` for a user name set by a trusted reverse
//! proxy (single sign-on); [`load`] has the keys for the store connections
//! under load.

mod load;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Deserialize;

use super::ConfigError;
use crate::auth::Role;
pub use load::WebLoad;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    #[serde(default = "default_listen")]
    listen: String,
    /// `password` (the default) or `none`.
    #[serde(default = "default_auth")]
    auth: String,
    #[serde(default = "default_idle")]
    session_idle_seconds: u64,
    #[serde(default = "default_session_max")]
    session_max_seconds: u64,
    #[serde(default = "default_lockout_after")]
    lockout_after: u32,
    #[serde(default = "default_lockout_seconds")]
    lockout_seconds: u64,
    #[serde(default)]
    cookie_secure: bool,
    #[serde(default = "default_live_streams_per_user")]
    live_streams_per_user: u32,
    #[serde(default = "default_live_streams")]
    live_streams: u32,
    #[serde(default = "default_export_stall_seconds")]
    export_stall_seconds: u64,
    #[serde(default = "default_sign_in_failures_per_address")]
    sign_in_failures_per_address: u32,
    #[serde(default = "default_sign_in_window_seconds")]
    sign_in_window_seconds: u64,
    connections: Option<u32>,
    slow_connections: Option<u32>,
    /// `"2s"`, `"500ms"`, or a number of seconds.
    max_wait: Option<toml::Value>,
    proxy: Option<RawProxy>,
}

impl Default for RawWeb {
    fn default() -> Self {
        RawWeb {
            listen: default_listen(),
            auth: default_auth(),
            session_idle_seconds: default_idle(),
            session_max_seconds: default_session_max(),
            lockout_after: default_lockout_after(),
            lockout_seconds: default_lockout_seconds(),
            cookie_secure: false,
            live_streams_per_user: default_live_streams_per_user(),
            live_streams: default_live_streams(),
            export_stall_seconds: default_export_stall_seconds(),
            sign_in_failures_per_address: default_sign_in_failures_per_address(),
            sign_in_window_seconds: default_sign_in_window_seconds(),
            connections: None,
            slow_connections: None,
            max_wait: None,
            proxy: None,
        }
    }
}

/// `[web.proxy]`: trust a user name set by a reverse proxy (single sign-on).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    user_header: String,
    trusted: Vec<String>,
    role_header: Option<String>,
    #[serde(default)]
    roles: BTreeMap<String, String>,
    default_role: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_auth() -> String {
    "password".to_owned()
}
fn default_idle() -> u64 {
    30 * 60
}
fn default_session_max() -> u64 {
    12 * 60 * 60
}
fn default_lockout_after() -> u32 {
    5
}
fn default_lockout_seconds() -> u64 {
    15 * 60
}
fn default_live_streams_per_user() -> u32 {
    4
}
fn default_live_streams() -> u32 {
    64
}
fn default_export_stall_seconds() -> u64 {
    60
}
fn default_sign_in_failures_per_address() -> u32 {
    20
}
fn default_sign_in_window_seconds() -> u64 {
    15 * 60
}

/// How the web view knows who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Users sign in (and API clients bring tokens): the default.
    Password,
    /// Everyone is an admin: only accepted on a loopback address.
    None,
}

/// `[web]`'s access control settings, validated.
#[derive(Debug, Clone)]
pub struct WebAuth {
    pub mode: AuthMode,
    pub session_idle_seconds: u64,
    pub session_max_seconds: u64,
    pub lockout_after: u32,
    pub lockout_seconds: u64,
    /// Mark the session cookie `Secure` (set it when a TLS proxy serves the web view).
    pub cookie_secure: bool,
    pub limits: WebLimits,
    /// The store connections under load; only read at start.
    pub load: WebLoad,
    pub proxy: Option<ProxyAuth>,
}

/// How much one client may ask of the web view at once, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Live streams one principal (user, token, proxy user) may hold open at once.
    pub live_streams_per_user: u32,
    /// Live streams open at once in all.
    pub live_streams: u32,
    /// A download whose client takes nothing for this long is ended.
    pub export_stall_seconds: u64,
    /// Failed sign-ins from one client address within a window before that
    /// address is refused (429) until the window ends.
    pub sign_in_failures_per_address: u32,
    /// That window; also the stretch over which repeated failures are summarized as one event.
    pub sign_in_window_seconds: u64,
}

/// `[web.proxy]`, validated.
#[derive(Debug, Clone)]
pub struct ProxyAuth {
    /// The header holding the user name (lower-case).
    pub user_header: String,
    /// Only requests from these addresses may set the headers.
    pub trusted: Vec<ipnet::IpNet>,
    /// A header holding the role, if the proxy sends one.
    pub role_header: Option<String>,
    /// Roles by user name, where the proxy sends none.
    pub roles: BTreeMap<String, Role>,
    pub default_role: Option<Role>,
}

impl ProxyAuth {
    pub fn trusts(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(&addr))
    }
}

/// `web.listen`: where the web view listens.
pub(super) fn listen(raw: &RawWeb, path: &Path) -> Result<SocketAddr, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    raw.listen.parse().map_err(|_| {
        invalid(
            "web.listen",
            format!(
                "{:?} is not an address:port, e.g. \"127.0.0.1:8080\"",
                raw.listen
            ),
        )
    })
}

/// `[web]`'s access control, checked against where it listens (`listen`).
pub(super) fn web_auth(
    raw: &RawWeb,
    listen: SocketAddr,
    path: &Path,
) -> Result<WebAuth, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let mode = match raw.auth.as_str() {
        "password" => AuthMode::Password,
        "none" => AuthMode::None,
        other => {
            return Err(invalid(
                "web.auth",
                format!(
                    "{other:?} is not an auth mode; use \"password\" (the default) or \"none\""
                ),
            ))
        }
    };
    if mode == AuthMode::None && !listen.ip().is_loopback() {
        return Err(invalid(
            "web.auth",
            format!(
                "auth = \"none\" lets anyone who can connect read the audit log, so it is only accepted on a loopback \
                 address, and web.listen is {listen}; set web.listen = \"127.0.0.1:{}\", or remove auth = \"none\" and \
                 create users with `pgtrail user add NAME --role admin`",
                listen.port()
            ),
        ));
    }
    if raw.session_idle_seconds == 0 {
        return Err(invalid(
            "web.session_idle_seconds",
            "must be at least 1".into(),
        ));
    }
    if raw.session_max_seconds < raw.session_idle_seconds {
        return Err(invalid(
            "web.session_max_seconds",
            format!(
                "the absolute session limit ({} s) is shorter than the idle limit web.session_idle_seconds ({} s)",
                raw.session_max_seconds, raw.session_idle_seconds
            ),
        ));
    }
    if raw.lockout_after == 0 {
        return Err(invalid(
            "web.lockout_after",
            "must be at least 1 failed sign-in".into(),
        ));
    }
    let limits = limits(raw, path)?;
    let load = load::load(raw, path)?;
    let proxy = match &raw.proxy {
        None => None,
        Some(p) => {
            if mode == AuthMode::None {
                return Err(invalid(
                    "web.proxy",
                    "[web.proxy] makes no sense with auth = \"none\"; remove one of them".into(),
                ));
            }
            Some(proxy(p, path)?)
        }
    };
    Ok(WebAuth {
        mode,
        session_idle_seconds: raw.session_idle_seconds,
        session_max_seconds: raw.session_max_seconds,
        lockout_after: raw.lockout_after,
        lockout_seconds: raw.lockout_seconds,
        cookie_secure: raw.cookie_secure,
        limits,
        load,
        proxy,
    })
}

/// `[web]`'s limits: each at least 1, and no user allowed more live streams than all together.
fn limits(raw: &RawWeb, path: &Path) -> Result<WebLimits, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let positive = [
        (
            "web.live_streams_per_user",
            u64::from(raw.live_streams_per_user),
            "live stream",
        ),
        (
            "web.live_streams",
            u64::from(raw.live_streams),
            "live stream",
        ),
        (
            "web.export_stall_seconds",
            raw.export_stall_seconds,
            "second",
        ),
        (
            "web.sign_in_failures_per_address",
            u64::from(raw.sign_in_failures_per_address),
            "failed sign-in",
        ),
        (
            "web.sign_in_window_seconds",
            raw.sign_in_window_seconds,
            "second",
        ),
    ];
    for (key, value, unit) in positive {
        if value == 0 {
            return Err(invalid(
                key,
                format!("must be at least 1 {unit}; remove the key for the default"),
            ));
        }
    }
    if raw.live_streams_per_user > raw.live_streams {
        return Err(invalid(
            "web.live_streams_per_user",
            format!(
                "{} live streams per user is more than web.live_streams ({}), the most open at once in all; \
                 lower it or raise web.live_streams",
                raw.live_streams_per_user, raw.live_streams
            ),
        ));
    }
    Ok(WebLimits {
        live_streams_per_user: raw.live_streams_per_user,
        live_streams: raw.live_streams,
        export_stall_seconds: raw.export_stall_seconds,
        sign_in_failures_per_address: raw.sign_in_failures_per_address,
        sign_in_window_seconds: raw.sign_in_window_seconds,
    })
}

/// `[web.proxy]`: its headers, trusted addresses and roles.
fn proxy(p: &RawProxy, path: &Path) -> Result<ProxyAuth, ConfigError> {
    let invalid = ConfigError::invalid_in(path);
    let header = |key, h: &str| -> Result<String, ConfigError> {
        axum::http::HeaderName::from_bytes(h.as_bytes())
            .map(|n| n.as_str().to_owned())
            .map_err(|_| {
                invalid(
                    key,
                    format!("{h:?} is not a valid HTTP header name, e.g. \"X-Forwarded-User\""),
                )
            })
    };
    let user_header = header("web.proxy.user_header", &p.user_header)?;
    let role_header = p
        .role_header
        .as_deref()
        .map(|h| header("web.proxy.role_header", h))
        .transpose()?;
    if p.trusted.is_empty() {
        return Err(invalid(
            "web.proxy.trusted",
            "no proxy address given; list the reverse proxy's addresses, e.g. trusted = [\"127.0.0.1\", \"10.0.0.0/24\"]".into(),
        ));
    }
    let trusted = p
        .trusted
        .iter()
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| invalid("web.proxy.trusted", format!("{t:?} is not an address or network, e.g. \"10.0.0.5\" or \"10.0.0.0/24\"")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let role = |key, r: &str| r.parse::<Role>().map_err(|e| invalid(key, e.to_string()));
    let roles = p
        .roles
        .iter()
        .map(|(user, r)| Ok((user.clone(), role("web.proxy.roles", r)?)))
        .collect::<Result<_, ConfigError>>()?;
    let default_role = p
        .default_role
        .as_deref()
        .map(|r| role("web.proxy.default_role", r))
        .transpose()?;
    Ok(ProxyAuth {
        user_header,
        trusted,
        role_header,
        roles,
        default_role,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::{error, load, SOURCE};
    use super::AuthMode;

    #[test]
    fn auth_none_only_on_loopback_and_web_keys_are_checked() {
        let c = load(&format!(
            "{SOURCE}[web]\nlisten = \"127.0.0.1:9000\"\nauth = \"none\"\n"
        ))
        .unwrap();
        assert_eq!(c.web_auth.mode, AuthMode::None);
        assert!(load(&format!(
            "{SOURCE}[web]\nlisten = \"[::1]:9000\"\nauth = \"none\"\n"
        ))
        .is_ok());
        assert_eq!(load(SOURCE).unwrap().web_auth.mode, AuthMode::Password);
        let limits = load(SOURCE).unwrap().web_auth.limits;
        assert_eq!(
            (
                limits.live_streams_per_user,
                limits.live_streams,
                limits.export_stall_seconds
            ),
            (4, 64, 60)
        );
        assert_eq!(
            (
                limits.sign_in_failures_per_address,
                limits.sign_in_window_seconds
            ),
            (20, 900)
        );
        let cases: &[(&str, &[&str])] = &[
            ("listen = \"0.0.0.0:8080\"\nauth = \"none\"\n", &["web.auth", "loopback", "0.0.0.0:8080", "pgtrail user add"]),
            ("auth = \"ldap\"\n", &["web.auth", "ldap"]),
            ("session_idle_seconds = 0\n", &["web.session_idle_seconds"]),
            ("session_idle_seconds = 100\nsession_max_seconds = 50\n", &["web.session_max_seconds"]),
            ("live_streams = 0\n", &["web.live_streams", "at least 1"]),
            ("live_streams = 2\n", &["web.live_streams_per_user", "4 live streams per user", "web.live_streams (2)"]),
            ("export_stall_seconds = 0\n", &["web.export_stall_seconds", "at least 1 second"]),
            ("sign_in_failures_per_address = 0\n", &["web.sign_in_failures_per_address"]),
            ("sign_in_window_seconds = 0\n", &["web.sign_in_window_seconds"]),
            ("sign_in_window_seconds = -5\n", &["sign_in_window_seconds"]),
            ("connections = 1\n", &["web.connections", "at least 2"]),
            ("connections = 4\nslow_connections = 4\n", &["web.slow_connections", "less than web.connections (4)"]),
            ("slow_connections = 0\n", &["web.slow_connections"]),
            ("max_wait = \"2 fortnights\"\n", &["web.max_wait", "not a duration"]),
            ("max_wait = \"5ms\"\n", &["web.max_wait", "between 10 ms and 60 s"]),
            ("max_wait = 600\n", &["web.max_wait", "between"]),
            ("max_wait = 1.5\n", &["web.max_wait", "not a duration"]),
            ("[web.proxy]\nuser_header = \"X-User\"\ntrusted = []\n", &["web.proxy.trusted"]),
            ("[web.proxy]\nuser_header = \"X-User\"\ntrusted = [\"10.0.0.0/33\"]\n", &["web.proxy.trusted", "10.0.0.0/33"]),
            ("[web.proxy]\nuser_header = \"X User\"\ntrusted = [\"10.0.0.1\"]\n", &["web.proxy.user_header"]),
            ("[web.proxy]\nuser_header = \"X-User\"\ntrusted = [\"10.0.0.1\"]\nroles = { bob = \"boss\" }\n", &["web.proxy.roles", "boss"]),
        ];
        for (web, needles) in cases {
            let e = error(&format!("{SOURCE}[web]\n{web}"));
            for n in *needles {
                assert!(
                    e.contains(n),
                    "expected {n:?} in the error for\n{web}\ngot: {e}"
                );
            }
        }
        let c = load(&format!(
            "{SOURCE}[web]\n[web.proxy]\nuser_header = \"X-Forwarded-User\"\ntrusted = [\"10.0.0.0/24\", \"::1\"]\nroles = {{ bob = \"auditor\" }}\n"
        ))
        .unwrap();
        let p = c.web_auth.proxy.unwrap();
        assert_eq!(p.user_header, "x-forwarded-user");
        assert!(p.trusts("10.0.0.9".parse().unwrap()) && p.trusts("::1".parse().unwrap()));
        assert!(p.trusts("::ffff:10.0.0.9".parse().unwrap()));
        assert!(!p.trusts("10.0.1.9".parse().unwrap()));
        assert_eq!(p.roles["bob"], crate::auth::Role::Auditor);
    }
}
