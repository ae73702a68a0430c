//! Lines of `export --format jsonl` (and of the API, which prints entries the same way): each
//! parsed as a value and as an [`OrderedObject`] that keeps the keys in document order.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON object with its keys in document order and each value as the exact JSON text.
#[derive(Debug)]
pub struct OrderedObject(pub Vec<(String, Box<RawValue>)>);

impl OrderedObject {
    pub fn parse(text: &str) -> OrderedObject {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON object ({e}): {text}"))
    }

    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// The exact JSON text of `key`'s value.
    pub fn raw(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.get())
            .unwrap_or_else(|| panic!("no key {key:?} in {:?}", self.keys()))
    }

    pub fn value(&self, key: &str) -> Value {
        serde_json::from_str(self.raw(key)).unwrap()
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut fields = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push((k, v));
                }
                Ok(OrderedObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// The top-level fields of a jsonl export line, in the order the spec fixes.
pub const EXPORT_FIELDS: [&str; 14] = [
    "id",
    "committed_at",
    "xid",
    "lsn",
    "schema",
    "table",
    "action",
    "primary_key",
    "before",
    "after",
    "changed_columns",
    "context",
    "details",
    "source",
];

/// One line of `export --format jsonl`.
#[derive(Debug)]
pub struct ExportLine {
    pub raw: String,
    pub fields: OrderedObject,
    pub value: Value,
}

impl ExportLine {
    pub fn id(&self) -> i64 {
        self.value["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("export line without integer id: {}", self.raw))
    }
}

pub fn parse_jsonl(text: &str) -> Vec<ExportLine> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| ExportLine {
            raw: l.to_string(),
            fields: OrderedObject::parse(l),
            value: serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("export line is not JSON ({e}): {l}")),
        })
        .collect()
}
