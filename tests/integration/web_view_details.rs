//! The smaller things of issue 14's defect 7, against a real store: the log's Actor column and
//! the entry page agree on who did it and say when that is the database role; Last and From
//! together on the page mean From (with a note), while the API keeps its 400; the From and To
//! fields show times as the log does.

use chrono::{Duration, Utc};
use reqwest::StatusCode;

use crate::harness::*;

/// The Actor cell of entry `id`'s row.
fn actor_cell(html: &str, id: i64) -> String {
    let row = &html[html.find(&format!("<tr id=\"e{id}\"")).unwrap()..];
    let cell = &row[row.find("data-label=\"Actor\">").unwrap() + 19..];
    cell[..cell.find("</td>").unwrap()].to_owned()
}

/// The Actor fact of an entry page.
fn actor_fact(html: &str) -> String {
    let at = &html[html.find("<dt>Actor</dt><dd>").unwrap() + 18..];
    at[..at.find("</dd>").unwrap()].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_actor_column_and_entry_page_agree_and_say_when_it_is_the_role() {
    let (_env, store, web) = store_and_web().await;
    let entry = |id: i64| {
        Synth::new("public.t", "INSERT")
            .pk(&format!(r#"{{"id":{id}}}"#))
            .after(&format!(r#"{{"id":{id}}}"#))
    };
    let ids = store_entries(
        &store,
        &[
            entry(1).who(Some("alice"), Some("app_rw")),
            entry(2).who(None, Some("app_rw")),
            entry(3).who(None, None),
        ],
    )
    .await;
    let log = web.page("/").await;
    let role_note = "<small class=\"whois\"";

    // An application actor: the actor, with the role under it; the page names the actor.
    let cell = actor_cell(&log, ids[0]);
    assert!(
        cell.contains(">alice</a> <small title=\"Database role\">app_rw</small>"),
        "{cell}"
    );
    let page = web.page(&format!("/entries/{}", ids[0])).await;
    assert_eq!(actor_fact(&page), "alice");

    // No application actor: both show the role and say it is one.
    let cell = actor_cell(&log, ids[1]);
    assert!(
        cell.contains(">app_rw</a> ")
            && cell.contains(role_note)
            && cell.contains(">database role</small>"),
        "{cell}"
    );
    let page = web.page(&format!("/entries/{}", ids[1])).await;
    let fact = actor_fact(&page);
    assert!(
        fact.starts_with("app_rw ") && fact.contains("database role: the application set no actor"),
        "{fact}"
    );
    // The role in the Actor column narrows the log to it, as its link promises.
    let narrowed = web.page("/?actor=app_rw").await;
    assert_eq!(row_ids(&narrowed), vec![ids[1]]);

    // Neither: a dash in both.
    assert!(actor_cell(&log, ids[2]).contains("<span class=\"none\">—</span>"));
    let page = web.page(&format!("/entries/{}", ids[2])).await;
    assert_eq!(actor_fact(&page), "<span class=\"none\">—</span>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_last_and_from_together_mean_from_on_the_page_and_400_in_the_api() {
    let (_env, store, web) = store_and_web().await;
    let now = Utc::now();
    let at = |hours: i64, id: i64| {
        Synth::new("public.t", "INSERT")
            .pk(&format!(r#"{{"id":{id}}}"#))
            .after(&format!(r#"{{"id":{id}}}"#))
            .at(now - Duration::hours(hours))
    };
    let ids = store_entries(&store, &[at(72, 1), at(30, 2), at(2, 3)]).await;
    let from = (now - Duration::hours(48))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let both = format!("/?last=24h&from={}", enc(&from));
    let (status, _, html) = web.fetch(&both).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    // From wins: the entry of 30 hours ago is in, which Last (24h) would have left out.
    assert_eq!(row_ids(&html), vec![ids[2], ids[1]]);
    assert!(
        html.contains("id=\"last-ignored\" role=\"note\">Both Last (24h) and From were given: the range starts at From, and Last was ignored."),
        "{html}"
    );
    // The form shows From as the log shows times, and no Last.
    assert!(
        html.contains(&format!("name=\"from\" value=\"{from}\"")),
        "{html}"
    );
    assert!(
        html.contains("<option value=\"\" selected>—</option>"),
        "{html}"
    );
    // Links from this page carry From alone.
    let refresh = &html[..html.find("\" id=\"refresh\"").unwrap()];
    let refresh = unescape(&refresh[refresh.rfind("href=\"").unwrap() + 6..]);
    assert!(
        refresh.contains("from=") && !refresh.contains("last="),
        "{refresh}"
    );
    // Without both, no note.
    assert!(!web.page("/?last=24h").await.contains("last-ignored"));
    // The API keeps refusing both, and says why.
    let (status, _, body) = web
        .fetch(&format!("/api/v1/entries?last=24h&from={}", enc(&from)))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("either last"), "{body}");
}
