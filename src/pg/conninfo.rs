//! Taking out of a connection string (libpq URL or `key=value` list) the
//! parameters pgtrail reads itself, before the rest goes to tokio-postgres,
//! whose parser knows neither `sslrootcert` nor `sslmode=verify-full`.

use std::collections::BTreeMap;

/// A connection string split in two: what pgtrail reads itself, and the rest.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    /// The connection string without the taken parameters, in the same form.
    pub rest: String,
    /// The taken parameters, decoded; where one is given twice the last wins, as in libpq.
    pub values: BTreeMap<String, String>,
}

/// Takes the parameters named in `names` out of `text`.
pub fn take(text: &str, names: &[&str]) -> Result<Taken, String> {
    let trimmed = text.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        Ok(take_from_url(trimmed, names))
    } else {
        take_from_pairs(trimmed, names)
    }
}

/// URL form: the parameters are the query's `key=value` pairs, percent-encoded.
fn take_from_url(url: &str, names: &[&str]) -> Taken {
    let Some((base, query)) = url.split_once('?') else {
        return Taken {
            rest: url.to_owned(),
            values: BTreeMap::new(),
        };
    };
    let mut values = BTreeMap::new();
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key);
        if names.contains(&key.as_str()) {
            values.insert(key, percent_decode(value));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Taken { rest, values }
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
fn take_from_pairs(text: &str, names: &[&str]) -> Result<Taken, String> {
    let mut values = BTreeMap::new();
    let mut kept = Vec::new();
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
        if names.contains(&key.as_str()) {
            values.insert(key, value);
        } else {
            let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{escaped}'"));
        }
    }
    Ok(Taken {
        rest: kept.join(" "),
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["sslmode", "sslrootcert"];

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn takes_query_parameters_out_of_a_url() {
        let taken = take(
            "postgres://u@db:5432/app?sslmode=verify-full&connect_timeout=5&sslrootcert=%2Fetc%2Fca%20x.pem",
            NAMES,
        )
        .unwrap();
        assert_eq!(taken.rest, "postgres://u@db:5432/app?connect_timeout=5");
        assert_eq!(
            taken.values,
            values(&[("sslmode", "verify-full"), ("sslrootcert", "/etc/ca x.pem")])
        );
        let only = take("postgresql://u@db/app?sslmode=require", NAMES).unwrap();
        assert_eq!(only.rest, "postgresql://u@db/app");
        let none = take("postgres://u@db/app", NAMES).unwrap();
        assert_eq!(none.rest, "postgres://u@db/app");
        assert!(none.values.is_empty());
    }

    #[test]
    fn takes_pairs_out_of_a_key_value_list() {
        let taken = take(
            r"host=db  sslmode = verify-ca user=u sslrootcert='/etc/my ca\'s.pem' password='p w'",
            NAMES,
        )
        .unwrap();
        assert_eq!(taken.rest, "host='db' user='u' password='p w'");
        assert_eq!(
            taken.values,
            values(&[
                ("sslmode", "verify-ca"),
                ("sslrootcert", "/etc/my ca's.pem")
            ])
        );
        let again = take(r"password='a\\b\'c' sslmode=disable sslmode=require", NAMES).unwrap();
        assert_eq!(again.rest, r"password='a\\b\'c'");
        assert_eq!(again.values, values(&[("sslmode", "require")]));
    }

    #[test]
    fn refuses_malformed_pairs() {
        assert!(take("host", NAMES).unwrap_err().contains("\"host\""));
        assert!(take("host='db", NAMES)
            .unwrap_err()
            .contains("no closing quote"));
    }

    #[test]
    fn leaves_malformed_escapes_as_they_are() {
        assert_eq!(percent_decode("a%2x%41%"), "a%2xA%");
    }
}
