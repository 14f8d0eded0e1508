//! The demo and its pages (SPEC §12, §13): the shells as HTTP serves them, then the whole
//! visitor flow in Debian's chromium driven by playwright-core (`tests/browser/flow.mjs`):
//! connect through the simulator's approval page, a manual sync watched to the end, the sales
//! grid and a customer's detail, the dashboard, disconnect. Screenshots of every step go to
//! `target/screenshots/`.
//!
//! Without chromium or `tests/browser/node_modules` the browser part prints a notice and
//! passes; with `CI=true` it must run (`.ci/run` installs both).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tributary_stripe_sim::Scale;
use tributary_web::demo::{Demo, DemoOptions};
use tributary_web::settings::Settings;

/// A small demo on a free port and its own SQLite file.
async fn small_demo(dir: &Path) -> Demo {
    let mut settings = Settings::load_from(None, &HashMap::new()).unwrap();
    settings.server.port = 0;
    Demo::start(
        settings,
        DemoOptions {
            scale: Scale::Small,
            spare_accounts: 1,
            database: dir.join("demo.db"),
            first_sync_timeout: Duration::from_secs(120),
            ..DemoOptions::default()
        },
    )
    .await
    .expect("the demo starts")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_pages_with_a_synced_business() {
    let dir = tempfile::tempdir().unwrap();
    let demo = small_demo(dir.path()).await;
    let http = http();

    for page in ["settings/stripe", "sales", "dashboard"] {
        let res = http
            .get(demo.page_url("northwind", page))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{page}");
        let csp = res.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert_eq!(res.headers()["referrer-policy"], "no-referrer");
        let body = res.text().await.unwrap();
        assert!(body.contains("/ui/assets/ui.js"), "{page}: {body}");
        assert!(
            body.contains("href=\"/ui/businesses/northwind/sales\""),
            "{page}: nav links"
        );
        assert!(
            !body.contains(&demo.token),
            "a shell holds no token and no data"
        );
    }
    for asset in [
        "app.css",
        "ui.js",
        "settings.js",
        "sales.js",
        "dashboard.js",
        "charts.js",
    ] {
        let res = http
            .get(format!("{}/ui/assets/{asset}", demo.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
    }
    let missing = http
        .get(format!("{}/ui/assets/nope.js", demo.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // The OAuth callback's landing page forwards to the business's settings with the outcome.
    let res = http
        .get(format!(
            "{}/ui/settings?businessId=bluebird&stripe=error&reason=stripe_denied",
            demo.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(
        res.headers()["location"],
        "/ui/businesses/bluebird/settings/stripe?stripe=error&reason=stripe_denied"
    );
    let res = http
        .get(format!(
            "{}/ui/settings?stripe=error&reason=stripe_state_invalid",
            demo.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "no business: a page that explains"
    );

    // The connected business is synced, the other is not connected.
    let get = |path: String| {
        let req = http
            .get(format!("{}{path}", demo.base_url))
            .bearer_auth(&demo.token);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let status = get("/api/stripe/northwind/status".into()).await;
    assert_eq!(status["status"], "connected", "{status}");
    assert_eq!(status["account_id"], demo.connected_account.as_str());
    assert_eq!(status["last_sync"]["status"], "succeeded", "{status}");
    let other = get("/api/stripe/bluebird/status".into()).await;
    assert_eq!(other["status"], "not_connected", "{other}");
    let grid = get("/api/contacts/stripe-customers?businessId=northwind&per_page=5".into()).await;
    assert!(grid["total"].as_u64().unwrap() > 0, "{grid}");

    let banner = demo.banner();
    assert!(
        banner.contains(&demo.page_url_with_token("bluebird", "settings/stripe")),
        "{banner}"
    );
    demo.stop().await;
}

/// Where the browser flow needs its tools; `None` when they are all there.
fn missing_tools(chromium: &str, dir: &Path) -> Option<String> {
    if !Path::new(chromium).exists() {
        return Some(format!("{chromium} not found (apt-get install chromium)"));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some(format!(
            "{} has no node_modules (npm ci there)",
            dir.display()
        ));
    }
    let node = std::process::Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Some("node not found".into());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sync_browse_and_disconnect_in_chromium() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scripts = manifest.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if let Some(why) = missing_tools(&chromium, &scripts) {
        assert!(!ci, "CI=true: the browser test must run, but {why}");
        let _ = writeln!(
            std::io::stderr(),
            "NOTICE: browser test SKIPPED: {why} (it runs in CI; see .ci/run)"
        );
        return;
    }
    let shots: PathBuf = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| manifest.join("../../target"), PathBuf::from)
        .join("screenshots");

    let dir = tempfile::tempdir().unwrap();
    let demo = small_demo(dir.path()).await;
    let run = tokio::process::Command::new("node")
        .arg("flow.mjs")
        .arg(&demo.base_url)
        .arg(&demo.token)
        .arg(&shots)
        .args(["bluebird", "Bluebird Yoga", "northwind"])
        .env("CHROMIUM", &chromium)
        .env("SIM_URL", &demo.sim_url)
        .current_dir(&scripts)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the browser flow finishes within 150 s")
        .expect("node runs");
    let _ = writeln!(
        std::io::stderr(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    demo.stop().await;
    assert!(
        out.status.success(),
        "the browser flow failed (screenshots in {})",
        shots.display()
    );
}
