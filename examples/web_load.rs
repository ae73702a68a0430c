//! Concurrent load on the web view for `bench/web_load.sh`: `--clients` clients,
//! each sending one request after another (a closed loop, no pause between
//! them) for `--seconds`, every request a route drawn by weight from a mix and
//! one of that route's URLs in turn. Afterwards a Markdown table per route:
//! requests, statuses, and p50/p95/p99 of the server's time (its
//! `Server-Timing: total;dur=` header: request in to response ready, waits for
//! a store connection included) and of the client's (request sent to body
//! read). A request started in the measured time counts however long it
//! takes: it is waited for (up to 120 s, then counted as `timeout`).
//!
//!   cargo run --release --example web_load -- --base http://127.0.0.1:8080 --urls DIR \
//!       --mix first=2,text=2,entry=2 --clients 128 --seconds 30 [--warmup 5] [--cookie 'k=v; k2=v2']
//!
//! `DIR/ROUTE` holds one path per line (`/?table=sales.orders`, `/entries/42`…)
//! for each route of the mix.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// What the command line asks for.
struct Args {
    base: String,
    urls: std::path::PathBuf,
    mix: Vec<(String, u32)>,
    clients: usize,
    seconds: u64,
    warmup: u64,
    cookie: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        base: String::new(),
        urls: ".".into(),
        mix: Vec::new(),
        clients: 8,
        seconds: 30,
        warmup: 5,
        cookie: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--base" => a.base = value()?,
            "--urls" => a.urls = value()?.into(),
            "--clients" => a.clients = value()?.parse().context("--clients")?,
            "--seconds" => a.seconds = value()?.parse().context("--seconds")?,
            "--warmup" => a.warmup = value()?.parse().context("--warmup")?,
            "--cookie" => a.cookie = Some(value()?),
            "--mix" => {
                for part in value()?.split(',') {
                    let (route, weight) = part
                        .split_once('=')
                        .with_context(|| format!("--mix: {part:?} is not ROUTE=WEIGHT"))?;
                    a.mix
                        .push((route.to_owned(), weight.parse().context("--mix weight")?));
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    if a.base.is_empty() || a.mix.is_empty() || a.clients == 0 {
        bail!("--base, --mix and at least one client are needed");
    }
    Ok(a)
}

/// One route of the mix: its name, weight and URLs.
struct Route {
    name: String,
    weight: u32,
    urls: Vec<String>,
}

/// One answered request.
struct Sample {
    route: usize,
    status: String,
    server_ms: Option<f64>,
    client_ms: f64,
}

/// The `total;dur=` of a `Server-Timing` header, in ms.
fn server_ms(headers: &reqwest::header::HeaderMap) -> Option<f64> {
    let value = headers.get("server-timing")?.to_str().ok()?;
    let dur = value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("dur="))?;
    dur.trim().parse().ok()
}

/// One client's loop: requests until `end`, samples kept from `counted` on.
async fn client(
    id: usize,
    http: reqwest::Client,
    setup: Arc<(Args, Vec<Route>)>,
    counted: Instant,
    end: Instant,
) -> Vec<Sample> {
    let (args, routes) = &*setup;
    let total: u32 = routes.iter().map(|r| r.weight).sum();
    let mut rng = fastrand::Rng::with_seed(id as u64 * 7919 + 1);
    let mut turn = vec![id; routes.len()];
    let mut samples = Vec::new();
    while Instant::now() < end {
        let mut pick = rng.u32(0..total);
        let route = routes
            .iter()
            .position(|r| {
                let hit = pick < r.weight;
                pick = pick.saturating_sub(r.weight);
                hit
            })
            .unwrap_or(0);
        let urls = &routes[route].urls;
        let url = format!("{}{}", args.base, urls[turn[route] % urls.len()]);
        turn[route] += 1;
        let started = Instant::now();
        let mut req = http.get(&url);
        if let Some(c) = &args.cookie {
            req = req.header(reqwest::header::COOKIE, c);
        }
        let (status, server) = match req.send().await {
            Ok(res) => {
                let status = res.status().as_u16().to_string();
                let server = server_ms(res.headers());
                match res.bytes().await {
                    Ok(_) => (status, server),
                    Err(_) => ("body error".to_owned(), server),
                }
            }
            Err(e) if e.is_timeout() => ("timeout".to_owned(), None),
            Err(_) => ("connection error".to_owned(), None),
        };
        // Every request started in the measured time counts, however long it took.
        if started >= counted {
            samples.push(Sample {
                route,
                status,
                server_ms: server,
                client_ms: started.elapsed().as_secs_f64() * 1000.0,
            });
        }
    }
    samples
}

/// The `q` quantile of sorted `v` (nearest rank), or `-` when empty.
fn quantile(v: &[f64], q: f64) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    let rank = ((v.len() as f64) * q).ceil().max(1.0) as usize;
    format!("{:.0}", v[rank.min(v.len()) - 1])
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut routes = Vec::new();
    for (name, weight) in &args.mix {
        let path = args.urls.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the URLs of route {name} from {}", path.display()))?;
        let urls: Vec<String> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            bail!("{} holds no URL", path.display());
        }
        routes.push(Route {
            name: name.clone(),
            weight: *weight,
            urls,
        });
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let clients = args.clients;
    let counted = Instant::now() + Duration::from_secs(args.warmup);
    let end = counted + Duration::from_secs(args.seconds);
    let seconds = args.seconds as f64;
    let setup = Arc::new((args, routes));
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(client(id, http.clone(), setup.clone(), counted, end)))
        .collect();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await?);
    }
    let routes = &setup.1;
    println!(
        "{} clients, {} s measured: {} requests, {:.0} requests/s",
        clients,
        seconds,
        samples.len(),
        samples.len() as f64 / seconds
    );
    println!();
    println!(
        "| route | requests | statuses | server p50 / p95 / p99 ms (200s) | client p50 / p95 / p99 ms (200s) | server max ms (all) |"
    );
    println!("| --- | ---: | --- | ---: | ---: | ---: |");
    for (i, r) in routes.iter().enumerate() {
        let mine: Vec<&Sample> = samples.iter().filter(|s| s.route == i).collect();
        let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
        for s in &mine {
            *statuses.entry(s.status.as_str()).or_default() += 1;
        }
        let statuses: Vec<String> = statuses.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        // Server time of the answered pages (200s): a 503 answers at once by design.
        let ok = |s: &&&Sample| s.status == "200";
        let server = sorted(mine.iter().filter(ok).filter_map(|s| s.server_ms).collect());
        let client = sorted(mine.iter().filter(ok).map(|s| s.client_ms).collect());
        let all = sorted(mine.iter().filter_map(|s| s.server_ms).collect());
        println!(
            "| {} | {} | {} | {} / {} / {} | {} / {} / {} | {} |",
            r.name,
            mine.len(),
            statuses.join(", "),
            quantile(&server, 0.5),
            quantile(&server, 0.95),
            quantile(&server, 0.99),
            quantile(&client, 0.5),
            quantile(&client, 0.95),
            quantile(&client, 0.99),
            quantile(&all, 1.0),
        );
    }
    Ok(())
}
