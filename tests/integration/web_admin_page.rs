//! The page shows each user only what they may do (issue 14, defects 5 and 6): a viewer sees no
//! Export and no Admin link (and the server still refuses them), an admin restricted to some
//! tables no form for a user beyond them; the admin page labels every field, says when a table
//! is empty, and puts disabling, signing out everywhere, resetting a password and revoking a
//! token behind a second step that says what it does, whose form really does it.

use reqwest::StatusCode;
use tokio_postgres::Client;

use crate::harness::*;

/// The part of the admin page's users table that is `name`'s row.
fn user_row<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html
        .find(&format!("<tr data-user=\"{name}\">"))
        .unwrap_or_else(|| panic!("no row of {name} in:\n{html}"));
    let row = &html[at..];
    &row[..row.find("</tr>").unwrap()]
}

/// Creates the viewer token `ci` with the admin page's form.
async fn create_ci_token(admin: &mut Agent, csrf: &str) -> Reply {
    let form = [
        ("csrf", csrf),
        ("name", "ci"),
        ("role", "viewer"),
        ("tables", ""),
    ];
    admin.post("/admin/tokens", &form).await
}

/// The admin page's section from `id="start"` to the next `</form>` or `</table>`.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = &html[html
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in:\n{html}"))..];
    &from[..from.find(end).unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_pages_offer_only_what_the_user_may_do() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    add_user(
        &env,
        "rita",
        "admin",
        Some("public.orders"),
        "rita-secret-1",
    )
    .await;
    add_user(&env, "vic", "viewer", None, "vic-secret-1").await;
    add_user(&env, "aud", "auditor", None, "aud-secret-1").await;
    let web = Web::start_with(&env, "").await;

    // A viewer: neither Export nor Admin on the log, and both still refused.
    let mut vic = Agent::signed_in(&web.base, "vic", "vic-secret-1").await;
    let log = vic.get("/").await.body;
    assert!(
        !log.contains("action=\"/export\"") && !log.contains("id=\"export\""),
        "{log}"
    );
    assert!(!log.contains("href=\"/admin\""), "{log}");
    assert_eq!(
        vic.get("/export?format=csv").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(vic.get("/admin").await.status, StatusCode::FORBIDDEN);
    // An auditor exports, without the admin link.
    let mut aud = Agent::signed_in(&web.base, "aud", "aud-secret-1").await;
    let log = aud.get("/").await.body;
    assert!(
        log.contains("id=\"export\"") && !log.contains("href=\"/admin\""),
        "{log}"
    );
    assert!(
        !log.contains("encrypted"),
        "no [export] keys, no encryption: {log}"
    );
    assert_eq!(aud.get("/export?format=csv").await.status, StatusCode::OK);

    // An admin of public.orders manages no one beyond it: no form for ada, none for vic.
    let mut rita = Agent::signed_in(&web.base, "rita", "rita-secret-1").await;
    let page = rita.get("/admin").await.body;
    assert!(
        page.contains("You are an admin of the tables public.orders"),
        "{page}"
    );
    for beyond in ["ada", "vic"] {
        let row = user_row(&page, beyond);
        assert!(
            row.contains("outside your tables") && !row.contains("<form"),
            "{row}"
        );
    }
    // Her own row: no Disable, and her role is not hers to change here.
    let own = user_row(&page, "rita");
    assert!(
        !own.contains("value=\"disable\"") && !own.contains("<select name=\"role\">"),
        "{own}"
    );
    assert!(
        own.contains("<input type=\"hidden\" name=\"role\" value=\"admin\">"),
        "{own}"
    );

    full_admin_labels_fields_and_confirms_what_cannot_be_undone(&web, &store).await;
}

/// The full admin: every field labelled, empty tables said so, a second step before what
/// cannot be undone, and that step's form really does it.
async fn full_admin_labels_fields_and_confirms_what_cannot_be_undone(web: &Web, store: &Client) {
    // The full admin: every field labelled, no placeholder standing in for a label.
    let mut ada = Agent::signed_in(&web.base, "ada", "ada-secret-1").await;
    let page = ada.get("/admin").await.body;
    let add = section(&page, "id=\"add-user\"", "</form>");
    for field in [
        "Name <input name=\"name\"",
        "Role <select name=\"role\">",
        "Tables <input name=\"tables\"",
        "Password <input name=\"password\"",
    ] {
        assert!(add.contains(&format!("<label>{field}")), "{field} in {add}");
    }
    let users = section(&page, "<table id=\"users\"", "</table>");
    assert!(!page.contains("placeholder="), "{page}");
    assert!(
        section(&page, "<table id=\"tokens\"", "</table>").contains("No API tokens yet"),
        "{page}"
    );
    // What cannot be undone is a second step that says what it does, and a red button.
    let row = user_row(users, "vic");
    for (step, button) in [
        (
            "Disable…",
            "value=\"disable\" class=\"danger\">Disable vic</button>",
        ),
        (
            "Sign out everywhere…",
            "value=\"end_sessions\" class=\"danger\">Sign vic out everywhere</button>",
        ),
        (
            "Reset password…",
            "class=\"danger\">Reset the password of vic</button>",
        ),
    ] {
        // The button is in the very <details> whose summary names the step.
        let at = row
            .find(&format!("<summary>{step}</summary>"))
            .unwrap_or_else(|| panic!("{step} in {row}"));
        let open = row[..at]
            .rfind("<details class=\"confirm\">")
            .unwrap_or_else(|| panic!("{step} is in no confirm step: {row}"));
        assert!(!row[open..at].contains("</details>"), "{step}: {row}");
        let close = at + row[at..].find("</details>").expect("a closed <details>");
        assert!(
            row[open..close].contains(button),
            "{button} in the step of {step}: {row}"
        );
    }
    assert!(
        !user_row(users, "ada").contains("value=\"disable\""),
        "no disabling oneself"
    );

    // The confirmed form does it: vic is disabled, by ada, and the page says so.
    let csrf = csrf_of(&page);
    let r = ada.user_action(&csrf, "vic", "disable").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body.contains("Disabled vic"), "{}", r.body);
    assert!(
        user_row(&r.body, "vic").contains("<span class=\"state off\">disabled</span>"),
        "{}",
        r.body
    );
    let (actor, _, e) = last_event(store, "user_disabled").await;
    assert_eq!(actor.as_deref(), Some("ada"));
    assert_eq!(e["after"]["disabled"], true);
    let disabled: bool = store
        .query_one("SELECT disabled FROM pgtrail.users WHERE name = 'vic'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(disabled);
    // A token: the table lists it, with its revoke step.
    let r = create_ci_token(&mut ada, &csrf).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let tokens = section(&r.body, "<table id=\"tokens\"", "</table>");
    assert!(!tokens.contains("No API tokens yet"), "{tokens}");
    assert!(
        tokens.contains("<summary>Revoke…</summary>")
            && tokens.contains("class=\"danger\">Revoke ci</button>"),
        "{tokens}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_export_says_the_file_will_be_encrypted() {
    let identity = age::x25519::Identity::generate();
    let (env, store) = TestEnv::with_store().await;
    store_entries(
        &store,
        &[Synth::new("public.t", "INSERT")
            .pk(r#"{"id":1}"#)
            .after(r#"{"id":1}"#)],
    )
    .await;
    let keys = format!(
        "\n[export]\nage_recipients = [{}]\n",
        toml_str(&identity.to_public().to_string())
    );
    let web = Web::start_extra(&env, &keys).await;
    let log = web.page("/").await;
    assert!(log.contains(">Export encrypted</button>"), "{log}");
    assert!(
        log.contains("id=\"export-encrypted\">The file is encrypted with age"),
        "{log}"
    );
    // Encryption is not required here: a plain file may be asked for, and is what it says.
    assert!(
        log.contains("<input type=\"checkbox\" name=\"encrypt\" value=\"0\"> plain file"),
        "{log}"
    );
    let (status, _, name, body) = download(&web.url("/export?format=csv&encrypt=0")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        name.contains(".csv\"") && String::from_utf8_lossy(&body).lines().count() == 2,
        "{name}"
    );
    let (status, _, name, _) = download(&web.url("/export?format=csv")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(name.contains(".csv.age\""), "{name}");
    let web = Web::start_extra(&env, &format!("{keys}require_encryption = true\n")).await;
    let log = web.page("/").await;
    assert!(
        log.contains("id=\"export-encrypted\"") && !log.contains("plain file"),
        "{log}"
    );
}

/// A new token's secret is shown once, on the page its creation renders: a capture health panel
/// that cannot be read then (here the table it reads first is gone) does not take the page with
/// it. The page says the panel is unavailable (and claims nothing about gaps), the secret shown
/// is the token's, and the panel is whole again once its table is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_panel_keeps_a_new_tokens_secret() {
    let (env, store) = TestEnv::with_store().await;
    add_user(&env, "ada", "admin", None, "ada-secret-1").await;
    let web = Web::start_with(&env, "").await;
    let mut ada = Agent::signed_in(&web.base, "ada", "ada-secret-1").await;
    let csrf = csrf_of(&ada.get("/admin").await.body);
    store
        .batch_execute("ALTER TABLE pgtrail.capture_state RENAME TO capture_state_gone")
        .await
        .unwrap();
    let r = create_ci_token(&mut ada, &csrf).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let secret =
        section(&r.body, "id=\"new-token\">", "</p>")["id=\"new-token\">".len()..].to_owned();
    assert!(secret.len() > 20, "{}", r.body);
    let capture = section(&r.body, "id=\"capture\"", "</section>");
    assert!(
        capture.contains("Capture health unavailable: ") && !capture.contains("None recorded"),
        "{capture}"
    );
    let made: i64 = query_value(
        &store,
        "SELECT count(*) FROM pgtrail.tokens WHERE name = 'ci'",
        &[],
    )
    .await;
    assert_eq!(made, 1);
    let api = http_client()
        .get(web.url("/api/v1/entries"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        StatusCode::OK,
        "the secret shown is the token's"
    );

    store
        .batch_execute("ALTER TABLE pgtrail.capture_state_gone RENAME TO capture_state")
        .await
        .unwrap();
    let page = ada.get("/admin").await.body;
    let capture = section(&page, "id=\"capture\"", "</section>");
    assert!(
        !capture.contains("unavailable") && capture.contains("None recorded"),
        "{capture}"
    );
}
