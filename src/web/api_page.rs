//! The API page (`/api`): the OpenAPI document the server serves at
//! `/api/v1/openapi.json` ([`ApiDoc`]) rendered as a page to read: how to
//! get a token, each endpoint with its parameters, its answers and an
//! example request (curl with the token header), and the shapes of what
//! comes back. Rendered on the server from that same document, so the two
//! cannot disagree; no script, nothing fetched from elsewhere.

use std::sync::LazyLock;

use askama::Template;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;
use utoipa::OpenApi;

use super::api::ApiDoc;
use super::error::WebError;

/// Query parameters an example request shows, with their values, in this
/// order, where the endpoint takes them.
const EXAMPLE_QUERY: [(&str, &str); 4] = [
    ("table", "public.orders"),
    ("action", "UPDATE"),
    ("last", "24h"),
    ("limit", "50"),
];

/// One parameter or field: its name, type, whether it must be given, what it is.
pub struct Field {
    pub name: String,
    /// `query`, `path`: where a parameter goes; empty for a field.
    pub place: String,
    pub kind: String,
    pub required: bool,
    pub description: String,
}

/// One endpoint (a method on a path).
pub struct Endpoint {
    /// For links: `get-api-v1-entries`.
    pub anchor: String,
    pub method: String,
    pub path: String,
    pub summary: String,
    pub description: String,
    pub params: Vec<Field>,
    /// Status, what it means, the shape of its body.
    pub responses: Vec<(String, String, String)>,
    /// A curl command that calls it.
    pub example: String,
}

/// A named shape of the document (`components.schemas`).
pub struct Shape {
    pub name: String,
    pub description: String,
    /// For an object; empty for an enumeration.
    pub fields: Vec<Field>,
    /// For an enumeration: its values.
    pub values: String,
}

/// What the page shows, read once from the document.
pub struct Reference {
    pub title: String,
    pub version: String,
    pub description: String,
    pub token: String,
    pub endpoints: Vec<Endpoint>,
    pub shapes: Vec<Shape>,
}

#[derive(Template)]
#[template(path = "api.html")]
pub struct ApiPage {
    pub r: &'static Reference,
    /// This server's address as the request named it, for the examples.
    pub base: String,
}

static REFERENCE: LazyLock<Reference> = LazyLock::new(|| {
    Reference::of(&serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null))
});

/// `GET /api`
pub async fn page(headers: HeaderMap) -> Result<Response, WebError> {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8080");
    let https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let page = ApiPage {
        r: &REFERENCE,
        base: format!("{}://{host}", if https { "https" } else { "http" }),
    };
    Ok(Html(page.render()?).into_response())
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// A schema's type as a reader says it: `string`, `integer (int64)`,
/// `array of string`, `one of INSERT, UPDATE`, a shape's name.
pub fn kind(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_owned();
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(variants)) = schema.get(key) {
            let kinds: Vec<String> = variants
                .iter()
                .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
                .map(kind)
                .collect();
            return kinds.join(" or ");
        }
    }
    if let Some(Value::Array(values)) = schema.get("enum") {
        let values: Vec<String> = values
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        return format!("one of {}", values.join(", "));
    }
    let ty = match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any JSON value".to_owned(),
    };
    match (ty.as_str(), schema.get("items"), schema.get("format")) {
        ("array", Some(items), _) => format!("array of {}", kind(items)),
        ("object", _, _) if schema.get("additionalProperties").is_some() => {
            "object (names to values)".to_owned()
        }
        (_, _, Some(Value::String(f))) => format!("{ty} ({f})"),
        _ => ty,
    }
}

impl Reference {
    fn of(doc: &Value) -> Reference {
        let info = &doc["info"];
        let mut endpoints = Vec::new();
        if let Some(paths) = doc["paths"].as_object() {
            for (path, item) in paths {
                for method in ["get", "post", "put", "patch", "delete"] {
                    if let Some(op) = item.get(method) {
                        endpoints.push(Endpoint::of(method, path, op));
                    }
                }
            }
        }
        let shapes = doc["components"]["schemas"]
            .as_object()
            .map(|s| s.iter().map(|(name, s)| Shape::of(name, s)).collect())
            .unwrap_or_default();
        Reference {
            title: text(info, "title"),
            version: text(info, "version"),
            description: text(info, "description"),
            token: text(
                &doc["components"]["securitySchemes"]["bearer"],
                "description",
            ),
            endpoints,
            shapes,
        }
    }
}

impl Endpoint {
    fn of(method: &str, path: &str, op: &Value) -> Endpoint {
        let params: Vec<Field> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| Field {
                        name: text(p, "name"),
                        place: text(p, "in"),
                        kind: kind(&p["schema"]),
                        required: p["required"].as_bool().unwrap_or(false),
                        description: text(p, "description"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let responses = op["responses"]
            .as_object()
            .map(|rs| {
                rs.iter()
                    .map(|(status, r)| {
                        let body = r["content"]
                            .as_object()
                            .and_then(|c| c.values().next())
                            .map(|c| kind(&c["schema"]))
                            .unwrap_or_default();
                        (status.clone(), text(r, "description"), body)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Endpoint {
            anchor: format!("{method}{}", path.replace(['/', '{', '}', '.'], "-"))
                .trim_end_matches('-')
                .to_owned(),
            method: method.to_uppercase(),
            path: path.to_owned(),
            summary: text(op, "summary"),
            description: text(op, "description"),
            example: example(method, path, &params),
            params,
            responses,
        }
    }
}

/// `curl -H "Authorization: Bearer $PGTRAIL_TOKEN" "$PGTRAIL_URL/api/v1/entries?last=24h"`.
fn example(method: &str, path: &str, params: &[Field]) -> String {
    let mut url = path.to_owned();
    for p in params.iter().filter(|p| p.place == "path") {
        url = url.replace(&format!("{{{}}}", p.name), "1");
    }
    let query: Vec<String> = EXAMPLE_QUERY
        .iter()
        .filter(|(name, _)| params.iter().any(|p| p.place == "query" && p.name == *name))
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    if !query.is_empty() {
        url = format!("{url}?{}", query.join("&"));
    }
    let verb = if method == "get" {
        String::new()
    } else {
        format!(" -X {}", method.to_uppercase())
    };
    format!("curl{verb} -H \"Authorization: Bearer $PGTRAIL_TOKEN\" \"$PGTRAIL_URL{url}\"")
}

impl Shape {
    fn of(name: &str, s: &Value) -> Shape {
        let required: Vec<&str> = s["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let fields = s["properties"]
            .as_object()
            .map(|ps| {
                ps.iter()
                    .map(|(field, p)| Field {
                        name: field.clone(),
                        place: String::new(),
                        kind: kind(p),
                        required: required.contains(&field.as_str()),
                        description: text(p, "description"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Shape {
            name: name.to_owned(),
            description: text(s, "description"),
            values: if s.get("enum").is_some() {
                kind(s)
            } else {
                String::new()
            },
            fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_of_the_document_has_an_example_with_a_token() {
        let r = &*REFERENCE;
        assert_eq!(r.title, "pgtrail");
        assert!(r.token.contains("pgtrail token create"));
        let paths: Vec<&str> = r.endpoints.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/api/v1/entries", "/api/v1/entries/{id}"]);
        assert_eq!(
            r.endpoints[0].example,
            "curl -H \"Authorization: Bearer $PGTRAIL_TOKEN\" \
             \"$PGTRAIL_URL/api/v1/entries?table=public.orders&action=UPDATE&last=24h&limit=50\""
        );
        assert!(r.endpoints[1]
            .example
            .ends_with("\"$PGTRAIL_URL/api/v1/entries/1\""));
        let action = r.endpoints[0]
            .params
            .iter()
            .find(|p| p.name == "action")
            .unwrap();
        assert_eq!(
            action.kind,
            "array of one of INSERT, UPDATE, DELETE, TRUNCATE, DDL, EVENT"
        );
        assert!(r
            .shapes
            .iter()
            .any(|s| s.name == "EntryDetail" && s.fields.iter().any(|f| f.name == "revert_sql")));
    }
}
