//! The API page (`/api`): every endpoint of the OpenAPI document the server serves appears on it
//! with an example request; each example, run as written with a real token, answers 200; how to
//! get a token is said; and what the page shows from the document or the request is escaped.

use reqwest::StatusCode;
use serde_json::Value;

use crate::harness::*;

/// The examples of a page: each `<pre … id="…-ex">` text, unescaped.
fn examples(html: &str) -> Vec<String> {
    html.split("<pre class=\"sql example\" id=\"")
        .skip(1)
        .map(|s| {
            let start = s.find('>').unwrap() + 1;
            unescape(&s[start..start + s[start..].find("</pre>").unwrap()])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_page_documents_every_endpoint_with_a_working_example() {
    let (env, store) = TestEnv::with_store().await;
    store_entries(
        &store,
        &[Synth::new("public.orders", "UPDATE")
            .pk(r#"{"id":1}"#)
            .before(r#"{"id":1,"status":"new"}"#)
            .after(r#"{"id":1,"status":"paid"}"#)
            .changed(r#"["status"]"#)],
    )
    .await;
    let web = Web::start_with(&env, "").await;
    add_user(&env, "ada", "admin", None, "ada-secret-pass-1").await;
    let mut ada = Agent::signed_in(&web.base, "ada", "ada-secret-pass-1").await;
    let page = ada.get("/api").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let html = page.body;
    let doc: Value = serde_json::from_str(&ada.get("/api/v1/openapi.json").await.body).unwrap();

    // Every path of the document, each with its example.
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert!(paths.len() >= 2, "{paths:?}");
    let shown = examples(&html);
    let token_part = "curl -H \"Authorization: Bearer $PGTRAIL_TOKEN\" \"$PGTRAIL_URL";
    for path in &paths {
        assert!(
            html.contains(&format!("<code class=\"api-path\">{path}</code>")),
            "{path} is on the page"
        );
        // This path's own example: the path ends there, or its query starts.
        let concrete = path.replace("{id}", "1");
        let own = |e: &String| {
            e.strip_prefix(&format!("{token_part}{concrete}"))
                .is_some_and(|rest| rest.starts_with('"') || rest.starts_with('?'))
        };
        assert!(shown.iter().any(own), "{path} has an example: {shown:#?}");
    }
    // How to get a token, from the document's own words and the page's.
    let text = unescape(&html);
    assert!(text.contains("pgtrail token create NAME --role viewer"));
    assert!(text.contains(&format!("export PGTRAIL_URL='{}'", web.base)));

    // Each example, run as written with a real token, answers 200 with JSON.
    let token = env
        .trail
        .cli(&["token", "create", "reader", "--role", "admin"])
        .await;
    token.assert_success();
    let mut client = Agent::bearing(&web.base, token.stdout.trim());
    for example in shown.iter().filter(|e| e.starts_with("curl")) {
        let url = example[token_part.len()..].trim_end_matches('"');
        let reply = client.get(url).await;
        assert_eq!(reply.status, StatusCode::OK, "{example}: {}", reply.body);
        reply.json();
    }

    // Text from the document is escaped (its descriptions hold quotes and braces) ...
    assert!(
        html.contains("{&#34;order_id&#34;:1,&#34;line&#34;:2}")
            || html.contains("{&quot;order_id&quot;")
    );
    assert!(!html.contains("{\"order_id\""));
    // ... and so is the address the request named, which the examples repeat.
    let hostile = ada
        .get_with("/api", &[("host", "x\"><script>alert(1)</script>")])
        .await;
    // Served (then escaped) or refused as a bad request; never anything else, never raw.
    assert!(!hostile.body.contains("<script>alert"), "{}", hostile.body);
    match hostile.status {
        StatusCode::OK => assert!(
            unescape(&hostile.body).contains("http://x\"><script>alert(1)</script>"),
            "{}",
            hostile.body
        ),
        StatusCode::BAD_REQUEST => {}
        other => panic!("a hostile Host got {other}: {}", hostile.body),
    }
    web.assert_quiet();
}
