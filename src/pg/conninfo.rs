//! Reading a connection string (libpq URL or `key=value` list) into its
//! parameters, and writing parameters back as a `key=value` list. pgtrail
//! fills in what the string leaves out (service file, environment, defaults;
//! see [`super::params`]) on the parameters, then hands the list to
//! tokio-postgres, whose parser knows neither `service`, `passfile`,
//! `sslrootcert` nor `sslmode=verify-full`.

use std::collections::BTreeMap;

/// A connection string's parameters, decoded; where one is given twice the last wins, as in libpq.
pub type Params = BTreeMap<String, String>;

/// The parameters of `text`, in either form.
pub fn parse(text: &str) -> Result<Params, String> {
    let trimmed = text.trim();
    match ["postgresql://", "postgres://"]
        .iter()
        .find_map(|scheme| trimmed.strip_prefix(scheme))
    {
        Some(rest) => Ok(parse_url(rest)),
        None => parse_pairs(trimmed),
    }
}

/// `params` as a `key='value'` list, quoted and escaped for any parser of that form.
pub fn render(params: &Params) -> String {
    params
        .iter()
        .map(|(key, value)| {
            let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
            format!("{key}='{escaped}'")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// URL form after the scheme: `[user[:password]@][host][:port][,…][/dbname][?key=value&…]`,
/// percent-encoded. Hosts and ports become libpq's comma lists; a port left
/// out of every host is left out altogether (so `PGPORT` can apply, as with libpq).
fn parse_url(rest: &str) -> Params {
    let mut params = Params::new();
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = before_query.split_once('/').unwrap_or((before_query, ""));
    let hosts = match authority.split_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            params.insert("user".into(), percent_decode(user));
            if let Some(password) = password {
                params.insert("password".into(), percent_decode(password));
            }
            hosts
        }
        None => authority,
    };
    let (hosts, ports): (Vec<String>, Vec<String>) = hosts
        .split(',')
        .map(|spec| {
            let (host, port) = match spec.strip_prefix('[').and_then(|s| s.split_once(']')) {
                Some((v6, after)) => (v6, after.strip_prefix(':').unwrap_or("")),
                None => spec.split_once(':').unwrap_or((spec, "")),
            };
            (percent_decode(host), percent_decode(port))
        })
        .unzip();
    if hosts.iter().any(|h| !h.is_empty()) {
        params.insert("host".into(), hosts.join(","));
    }
    if ports.iter().any(|p| !p.is_empty()) {
        params.insert("port".into(), ports.join(","));
    }
    params.insert("dbname".into(), percent_decode(dbname));
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(percent_decode(key), percent_decode(value));
    }
    // An empty value is as good as none (libpq then uses the default too).
    params.retain(|_, value| !value.is_empty());
    params
}

/// `%XX` escapes decoded; a malformed escape is kept as it is, as libpq's
/// parser would refuse it later anyway. `+` stays `+` (this is not a form).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value` form: whitespace-separated pairs; a value may be single-quoted,
/// and a backslash escapes the next character, in or out of quotes.
fn parse_pairs(text: &str) -> Result<Params, String> {
    let mut params = Params::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "not a valid PostgreSQL connection string: {key:?} has no '=' and value"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        let mut closed = !quoted;
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '\'' if quoted => {
                    closed = true;
                    break;
                }
                c if c.is_whitespace() && !quoted => break,
                c => value.push(c),
            }
        }
        if !closed {
            return Err(format!(
                "not a valid PostgreSQL connection string: the value of {key:?} has no closing quote"
            ));
        }
        if value.is_empty() {
            params.remove(&key);
        } else {
            params.insert(key, value);
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_every_part_of_a_url() {
        let read = parse(
            "postgres://u%40x:p%3Aw@db:5433/app?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca%20x.pem",
        )
        .unwrap();
        assert_eq!(
            read,
            params(&[
                ("user", "u@x"),
                ("password", "p:w"),
                ("host", "db"),
                ("port", "5433"),
                ("dbname", "app"),
                ("sslmode", "verify-full"),
                ("connect_timeout", "5"),
                ("sslrootcert", "/etc/ca x.pem"),
            ])
        );
        assert_eq!(
            parse("postgresql://[::1]:5433,db2/app").unwrap(),
            params(&[("host", "::1,db2"), ("port", "5433,"), ("dbname", "app")])
        );
    }

    #[test]
    fn what_a_url_leaves_out_is_not_there() {
        assert_eq!(parse("postgres://").unwrap(), Params::new());
        assert_eq!(
            parse("postgres:///app").unwrap(),
            params(&[("dbname", "app")])
        );
        assert_eq!(
            parse("postgres://u@db/?service=shop").unwrap(),
            params(&[("user", "u"), ("host", "db"), ("service", "shop")])
        );
        assert_eq!(
            parse("postgres://%2Fvar%2Frun%2Fpostgresql/app").unwrap(),
            params(&[("host", "/var/run/postgresql"), ("dbname", "app")])
        );
    }

    #[test]
    fn reads_a_key_value_list_and_writes_it_back() {
        let read = parse(
            r"host=db  sslmode = verify-ca user=u sslrootcert='/etc/my ca\'s.pem' password='p w' port=''",
        )
        .unwrap();
        assert_eq!(
            read,
            params(&[
                ("host", "db"),
                ("sslmode", "verify-ca"),
                ("user", "u"),
                ("sslrootcert", "/etc/my ca's.pem"),
                ("password", "p w"),
            ])
        );
        let again = parse(r"password='a\\b\'c' sslmode=disable sslmode=require").unwrap();
        assert_eq!(
            again,
            params(&[("password", r"a\b'c"), ("sslmode", "require")])
        );
        assert_eq!(render(&again), r"password='a\\b\'c' sslmode='require'");
        assert_eq!(parse(&render(&read)).unwrap(), read);
    }

    #[test]
    fn refuses_malformed_pairs() {
        assert!(parse("host").unwrap_err().contains("\"host\""));
        assert!(parse("host='db").unwrap_err().contains("no closing quote"));
    }

    #[test]
    fn leaves_malformed_escapes_as_they_are() {
        assert_eq!(percent_decode("a%2x%41%"), "a%2xA%");
    }
}
