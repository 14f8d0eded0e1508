//! Integration tests: the simulator over HTTP, as a Stripe client sees it.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tributary_stripe_sim::{Scale, SimOptions, SimServer};

const KEY: &str = "sk_test_simtests_0123456789";

fn notice(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

struct T {
    sim: SimServer,
    http: reqwest::Client,
    base: String,
}

impl T {
    async fn start(accounts: usize, seed: u64) -> T {
        let sim = SimServer::start(SimOptions {
            seed,
            accounts,
            scale: Scale::Small,
            ..Default::default()
        })
        .await
        .expect("simulator starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let base = sim.base_url();
        T { sim, http, base }
    }

    fn acct(&self, i: usize) -> String {
        self.sim.accounts()[i].clone()
    }

    async fn get_with(
        &self,
        key: Option<&str>,
        acct: Option<&str>,
        path: &str,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut r = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        if let Some(a) = acct {
            r = r.header("Stripe-Account", a);
        }
        let res = r.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, body, headers)
    }

    async fn get(&self, acct: &str, path: &str) -> (u16, Value) {
        let (s, b, _) = self.get_with(Some(KEY), Some(acct), path).await;
        (s, b)
    }

    async fn ok(&self, acct: &str, path: &str) -> Value {
        let (s, b) = self.get(acct, path).await;
        assert_eq!(s, 200, "GET {path}: {b}");
        b
    }

    async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let res = r.send().await.expect("control request");
        let s = res.status().as_u16();
        (s, res.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (s, b) = self.control(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(s, 200, "POST {path}: {b}");
        b
    }

    async fn counts(&self, acct: &str) -> Value {
        let (_, all) = self
            .control(reqwest::Method::GET, "/_sim/accounts", None)
            .await;
        all.as_array()
            .expect("array")
            .iter()
            .find(|a| a["id"] == json!(acct))
            .expect("account listed")["counts"]
            .clone()
    }

    /// Every object of a list, following `starting_after`.
    async fn all(&self, acct: &str, path: &str, limit: usize) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out: Vec<Value> = Vec::new();
        loop {
            let cursor = out
                .last()
                .map(|o| format!("&starting_after={}", o["id"].as_str().expect("id")))
                .unwrap_or_default();
            let page = self
                .ok(acct, &format!("{path}{sep}limit={limit}{cursor}"))
                .await;
            assert_eq!(page["object"], "list");
            let data = page["data"].as_array().expect("data").clone();
            assert!(data.len() <= limit);
            out.extend(data);
            if page["has_more"] != json!(true) {
                return out;
            }
        }
    }
}

fn ids(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|o| o["id"].as_str().expect("id").to_string())
        .collect()
}

fn assert_newest_first(v: &[Value]) {
    for w in v.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let key = |o: &Value| {
            (
                o["created"].as_i64().expect("created"),
                o["id"].as_str().expect("id").to_string(),
            )
        };
        assert!(
            key(a) > key(b),
            "not newest first: {} then {}",
            a["id"],
            b["id"]
        );
    }
}

// ---------- shapes ----------

fn missing_keys(fixture: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    let (Some(f), Some(g)) = (fixture.as_object(), got.as_object()) else {
        return;
    };
    for (k, fv) in f {
        let p = format!("{path}.{k}");
        match g.get(k) {
            None => out.push(p),
            Some(gv) if k != "metadata" && !(path.ends_with("event") && k == "data") => {
                missing_keys(fv, gv, &p, out)
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn shapes_match_stripe_fixtures() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/stripe-fixtures/fixtures3.json"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        notice(&format!(
            "SKIP shapes_match_stripe_fixtures: fixture file not found at {path}"
        ));
        return;
    };
    let fixtures: Value = serde_json::from_str(&text).expect("fixtures parse");
    let res = &fixtures["resources"];
    let t = T::start(1, 11).await;
    let a = t.acct(0);
    let mut samples: Vec<(&str, Value)> = Vec::new();
    for (name, path) in [
        ("customer", "/v1/customers"),
        ("product", "/v1/products"),
        ("price", "/v1/prices"),
        ("payment_intent", "/v1/payment_intents"),
        ("charge", "/v1/charges"),
        ("refund", "/v1/refunds"),
        ("invoice", "/v1/invoices"),
        ("invoice_payment", "/v1/invoice_payments"),
        ("checkout.session", "/v1/checkout/sessions"),
        ("subscription", "/v1/subscriptions?status=all"),
        ("event", "/v1/events"),
    ] {
        let list = t.all(&a, path, 100).await;
        assert!(!list.is_empty(), "no {name} generated");
        for o in list {
            assert_eq!(o["object"], json!(name));
            samples.push((name, o));
        }
    }
    let invoices = t.all(&a, "/v1/invoices", 100).await;
    for inv in invoices.iter().take(20) {
        for l in t
            .all(
                &a,
                &format!("/v1/invoices/{}/lines", inv["id"].as_str().expect("id")),
                100,
            )
            .await
        {
            samples.push(("line_item", l));
        }
    }
    let sessions = t.all(&a, "/v1/checkout/sessions", 100).await;
    for s in sessions.iter().take(20) {
        for l in t
            .all(
                &a,
                &format!(
                    "/v1/checkout/sessions/{}/line_items",
                    s["id"].as_str().expect("id")
                ),
                100,
            )
            .await
        {
            samples.push(("item", l));
        }
    }
    let subs = t
        .all(
            &a,
            "/v1/subscriptions?status=all&expand[]=data.discounts",
            100,
        )
        .await;
    for s in &subs {
        for it in s["items"]["data"].as_array().expect("items") {
            samples.push(("subscription_item", it.clone()));
            samples.push(("plan", it["plan"].clone()));
        }
        for d in s["discounts"].as_array().expect("discounts") {
            assert!(d.is_object(), "discount not expanded");
            samples.push(("discount", d.clone()));
        }
    }
    assert!(
        samples.iter().any(|(n, _)| *n == "discount"),
        "no subscription with a discount"
    );
    let sid = subs[0]["id"].as_str().expect("id");
    for it in t
        .all(
            &a,
            &format!("/v1/subscription_items?subscription={sid}"),
            100,
        )
        .await
    {
        samples.push(("subscription_item", it));
    }
    samples.push(("account", t.ok(&a, "/v1/account").await));
    t.post(&format!("/_sim/accounts/{a}/objects"), json!([{"id": "cus_shape", "object": "customer", "email": "x@y.z"}, {"id": "cus_shape", "object": "customer", "deleted": true}])).await;
    samples.push((
        "deleted_customer",
        t.ok(&a, "/v1/customers/cus_shape").await,
    ));
    let mut problems = Vec::new();
    for (name, o) in &samples {
        let mut out = Vec::new();
        missing_keys(&res[*name], o, name, &mut out);
        if !out.is_empty() {
            problems.push(format!("{} {}: {:?}", name, o["id"], out));
        }
    }
    assert!(
        problems.is_empty(),
        "objects missing fixture keys:\n{}",
        problems.join("\n")
    );
}

// ---------- lists ----------

#[tokio::test]
async fn lists_page_both_ways_newest_first() {
    let t = T::start(1, 21).await;
    let a = t.acct(0);
    let counts = t.counts(&a).await;
    let all = t.all(&a, "/v1/customers", 7).await;
    assert_eq!(all.len() as u64, counts["customers"].as_u64().expect("n"));
    assert_newest_first(&all);
    let first = t.ok(&a, "/v1/customers").await;
    assert_eq!(
        first["data"].as_array().expect("d").len(),
        10,
        "default limit is 10"
    );
    assert_eq!(first["url"], "/v1/customers");
    assert_eq!(first["has_more"], true);
    // Backwards from the oldest with ending_before reaches the same objects.
    let mut back: Vec<Value> = Vec::new();
    let mut cursor = all.last().expect("last")["id"]
        .as_str()
        .expect("id")
        .to_string();
    loop {
        let page = t
            .ok(&a, &format!("/v1/customers?limit=6&ending_before={cursor}"))
            .await;
        let data = page["data"].as_array().expect("data").clone();
        assert_newest_first(&data);
        let Some(top) = data.first() else { break };
        cursor = top["id"].as_str().expect("id").to_string();
        let mut d = data.clone();
        d.extend(back);
        back = d;
        if page["has_more"] != json!(true) {
            break;
        }
    }
    assert_eq!(ids(&back), ids(&all[..all.len() - 1]));
    // Every resource pages to its count.
    for (path, key) in [
        ("/v1/products", "products"),
        ("/v1/prices", "prices"),
        ("/v1/payment_intents", "payment_intents"),
        ("/v1/charges", "charges"),
        ("/v1/refunds", "refunds"),
        ("/v1/invoices", "invoices"),
        ("/v1/invoice_payments", "invoice_payments"),
        ("/v1/checkout/sessions", "checkout_sessions"),
        ("/v1/subscriptions?status=all", "subscriptions"),
    ] {
        let list = t.all(&a, path, 100).await;
        assert_eq!(
            list.len() as u64,
            counts[key].as_u64().expect("n"),
            "{path}"
        );
        assert_newest_first(&list);
    }
    // Parameter errors.
    for bad in [
        "limit=0",
        "limit=101",
        "limit=ten",
        "starting_after=cus_x&ending_before=cus_y",
        "colour=red",
        "created[gt]=soon",
    ] {
        let (s, b) = t.get(&a, &format!("/v1/customers?{bad}")).await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert_eq!(b["error"]["type"], "invalid_request_error");
    }
    let (s, b) = t.get(&a, "/v1/customers?starting_after=cus_nope").await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (404, json!("resource_missing"))
    );
}

#[tokio::test]
async fn created_filters_and_field_filters() {
    let t = T::start(1, 22).await;
    let a = t.acct(0);
    let all = t.all(&a, "/v1/payment_intents", 100).await;
    let mid = all[all.len() / 2]["created"].as_i64().expect("created");
    let count = |f: &dyn Fn(i64) -> bool| {
        all.iter()
            .filter(|o| f(o["created"].as_i64().expect("c")))
            .count()
    };
    for (q, n) in [
        (format!("created[gte]={mid}"), count(&|c| c >= mid)),
        (format!("created[gt]={mid}"), count(&|c| c > mid)),
        (format!("created[lt]={mid}"), count(&|c| c < mid)),
        (format!("created[lte]={mid}"), count(&|c| c <= mid)),
        (format!("created={mid}"), count(&|c| c == mid)),
        (
            format!(
                "created[gt]={}&created[lt]={}",
                mid - 86_400 * 30,
                mid + 86_400 * 30
            ),
            count(&|c| c > mid - 86_400 * 30 && c < mid + 86_400 * 30),
        ),
    ] {
        let got = t.all(&a, &format!("/v1/payment_intents?{q}"), 100).await;
        assert_eq!(got.len(), n, "{q}");
    }
    // Subscriptions hide cancelled ones unless asked.
    let default = t.all(&a, "/v1/subscriptions", 100).await;
    assert!(default.iter().all(|s| s["status"] != "canceled"));
    let all_subs = t.all(&a, "/v1/subscriptions?status=all", 100).await;
    let canceled = t.all(&a, "/v1/subscriptions?status=canceled", 100).await;
    assert!(!canceled.is_empty());
    assert_eq!(default.len() + canceled.len(), all_subs.len());
    let past_due = t.all(&a, "/v1/subscriptions?status=past_due", 100).await;
    assert!(!past_due.is_empty() && past_due.iter().all(|s| s["status"] == "past_due"));
    // Invoice payments by invoice and by payment intent.
    let ips = t.all(&a, "/v1/invoice_payments", 100).await;
    let ip = &ips[0];
    let inv = ip["invoice"].as_str().expect("invoice");
    let by_inv = t
        .all(&a, &format!("/v1/invoice_payments?invoice={inv}"), 100)
        .await;
    assert!(
        by_inv.iter().any(|x| x["id"] == ip["id"])
            && by_inv.iter().all(|x| x["invoice"] == json!(inv))
    );
    let pi = ip["payment"]["payment_intent"].as_str().expect("pi");
    let by_pi = t
        .all(
            &a,
            &format!(
                "/v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]={pi}"
            ),
            100,
        )
        .await;
    assert_eq!(ids(&by_pi), [ip["id"].as_str().expect("id")]);
    let paid = t.all(&a, "/v1/invoice_payments?status=paid", 100).await;
    assert!(paid.iter().all(|x| x["status"] == "paid"));
    // Customer email filter.
    let cust = t.all(&a, "/v1/customers", 100).await;
    let email = cust[0]["email"].as_str().expect("email");
    let by_email = t
        .all(
            &a,
            &format!("/v1/customers?email={}", urlencode(email)),
            100,
        )
        .await;
    assert!(by_email.iter().all(|c| c["email"] == json!(email)) && !by_email.is_empty());
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn invoices_sessions_and_expansion() {
    let t = T::start(1, 23).await;
    let a = t.acct(0);
    let invoices = t.all(&a, "/v1/invoices", 100).await;
    let big = invoices
        .iter()
        .find(|i| i["lines"]["has_more"] == json!(true))
        .expect("an invoice with more than 10 lines");
    assert_eq!(big["lines"]["data"].as_array().expect("lines").len(), 10);
    let id = big["id"].as_str().expect("id");
    let lines = t.all(&a, &format!("/v1/invoices/{id}/lines"), 4).await;
    assert!(lines.len() > 10);
    assert_eq!(
        ids(&lines[..10]),
        ids(big["lines"]["data"].as_array().expect("d"))
    );
    assert!(
        invoices.iter().all(|i| i.get("payment_intent").is_none()),
        "current API: no invoice.payment_intent"
    );
    let sub_inv = invoices
        .iter()
        .find(|i| !i["parent"].is_null())
        .expect("subscription invoice");
    assert!(
        sub_inv["parent"]["subscription_details"]["subscription"]
            .as_str()
            .expect("sub")
            .starts_with("sub_")
    );
    // expand payments on an invoice, and nested payment → payment intent.
    let paid = invoices
        .iter()
        .find(|i| i["status"] == "paid" && !i["parent"].is_null() && i["total"].as_i64() > Some(0))
        .expect("paid");
    let pid = paid["id"].as_str().expect("id");
    let full = t
        .ok(
            &a,
            &format!("/v1/invoices/{pid}?expand[]=payments.data.payment.payment_intent"),
        )
        .await;
    let pay = &full["payments"]["data"][0];
    assert_eq!(pay["invoice"], json!(pid));
    assert_eq!(pay["payment"]["payment_intent"]["object"], "payment_intent");
    // Sessions: line_items only when expanded.
    let plain = t.ok(&a, "/v1/checkout/sessions?limit=5").await;
    assert!(plain["data"][0].get("line_items").is_none());
    let exp = t
        .ok(
            &a,
            "/v1/checkout/sessions?limit=5&expand[]=data.line_items&expand[]=data.customer",
        )
        .await;
    for s in exp["data"].as_array().expect("d") {
        assert_eq!(s["line_items"]["object"], "list");
        let sid = s["id"].as_str().expect("id");
        let items = t
            .all(&a, &format!("/v1/checkout/sessions/{sid}/line_items"), 100)
            .await;
        assert_eq!(
            items.len(),
            s["line_items"]["data"].as_array().expect("d").len()
        );
        assert!(s["customer"].is_null() || s["customer"]["object"] == "customer");
    }
    // Payment-mode session → payment intent → charge.
    let sessions = t.all(&a, "/v1/checkout/sessions", 100).await;
    let pay_s = sessions
        .iter()
        .find(|s| s["mode"] == "payment" && s["status"] == "complete")
        .expect("payment session");
    let pi = t
        .ok(
            &a,
            &format!(
                "/v1/payment_intents/{}?expand[]=latest_charge",
                pay_s["payment_intent"].as_str().expect("pi")
            ),
        )
        .await;
    assert_eq!(pi["latest_charge"]["payment_intent"], pi["id"]);
    assert!(
        sessions
            .iter()
            .any(|s| s["mode"] == "subscription" && s["subscription"].is_string())
    );
    assert!(
        sessions
            .iter()
            .any(|s| s["customer"].is_null() && s["status"] == "complete"),
        "guest checkout"
    );
    // Expansion limits and errors.
    let (s, b) = t
        .get(&a, &format!("/v1/invoices/{pid}?expand[]=a.b.c.d.e"))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = t
        .get(&a, &format!("/v1/invoices/{pid}?expand[]=amount_due"))
        .await;
    assert_eq!(s, 400);
    let (s, _) = t
        .get(&a, &format!("/v1/invoices/{pid}?expand[]=nonsense"))
        .await;
    assert_eq!(s, 400);
    // Discounts with their coupon, as MRR needs them.
    let subs = t
        .all(
            &a,
            "/v1/subscriptions?status=all&expand[]=data.discounts.source.coupon",
            100,
        )
        .await;
    let d = subs
        .iter()
        .flat_map(|s| s["discounts"].as_array().expect("d").clone())
        .next()
        .expect("a discount");
    assert_eq!(d["object"], "discount");
    assert!(
        d["source"]["coupon"]["percent_off"]
            .as_f64()
            .expect("percent")
            > 0.0
    );
    // Currencies, zero-decimal included.
    let charges = t.all(&a, "/v1/charges", 100).await;
    let currencies: HashSet<&str> = charges
        .iter()
        .filter_map(|c| c["currency"].as_str())
        .collect();
    assert!(
        currencies.len() >= 2 && currencies.contains("jpy"),
        "{currencies:?}"
    );
}

// ---------- errors, accounts, objects ----------

#[tokio::test]
async fn errors_match_stripe() {
    let t = T::start(2, 31).await;
    let a = t.acct(0);
    let (s, b, _) = t.get_with(None, Some(&a), "/v1/customers").await;
    assert_eq!(s, 401, "{b}");
    let (s, b, _) = t
        .get_with(Some("pk_test_nope"), Some(&a), "/v1/customers")
        .await;
    assert_eq!(
        (s, b["error"]["type"].clone()),
        (401, json!("invalid_request_error"))
    );
    let (s, b) = t.get(&a, "/v1/customers/cus_missing").await;
    assert_eq!(s, 404);
    let e = &b["error"];
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str(), e["param"].as_str()),
        (
            Some("invalid_request_error"),
            Some("resource_missing"),
            Some("id")
        )
    );
    assert_eq!(e["message"], "No such customer: 'cus_missing'");
    assert!(
        e["doc_url"]
            .as_str()
            .expect("doc")
            .starts_with("https://stripe.com/docs/error-codes/")
    );
    let (s, b) = t.get("acct_1Unknown000000", "/v1/customers").await;
    assert_eq!(s, 403);
    assert_eq!(b["error"]["code"], "account_invalid");
    assert_eq!(
        b["error"]["message"],
        "The provided key 'sk_test_***************6789' does not have access to account 'acct_1Unknown000000' (or that account does not exist). Application access may have been revoked."
    );
    let (s, _) = t.get(&a, "/v1/nothing_here").await;
    assert_eq!(s, 404);
    // Accounts.
    let acc = t.ok(&a, "/v1/account").await;
    assert_eq!(acc["id"], json!(a));
    assert!(acc["business_profile"]["name"].is_string());
    let (s, b, _) = t
        .get_with(Some(KEY), None, &format!("/v1/accounts/{a}"))
        .await;
    assert_eq!((s, b["id"].clone()), (200, json!(a)));
    // Revoke: 403 for that account only, and the account shows as revoked.
    t.post(&format!("/_sim/accounts/{a}/revoke"), json!({}))
        .await;
    let (s, b) = t.get(&a, "/v1/customers").await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (403, json!("account_invalid"))
    );
    let (s, _, _) = t
        .get_with(Some(KEY), None, &format!("/v1/accounts/{a}"))
        .await;
    assert_eq!(s, 403);
    assert_eq!(t.get(&t.acct(1), "/v1/customers").await.0, 200);
    let (_, list) = t
        .control(reqwest::Method::GET, "/_sim/accounts", None)
        .await;
    assert_eq!(list[0]["status"], "revoked");
}

#[tokio::test]
async fn stored_objects_events_and_deletions() {
    let t = T::start(1, 41).await;
    let a = t.acct(0);
    let before = t.counts(&a).await["customers"].as_u64().expect("n");
    let r = t.post(&format!("/_sim/accounts/{a}/objects"), json!([
        {"id": "cus_given1", "object": "customer", "email": "given@example.com", "created": 1_000, "name": "Given"},
        {"id": "prod_given1", "object": "product", "name": "Given product", "active": true}
    ])).await;
    assert_eq!(r["events"].as_array().expect("events").len(), 2);
    assert_eq!(t.counts(&a).await["customers"].as_u64(), Some(before + 1));
    let c = t.ok(&a, "/v1/customers/cus_given1").await;
    assert_eq!(
        (c["email"].as_str(), c["created"].as_i64()),
        (Some("given@example.com"), Some(1_000))
    );
    let oldest = t.all(&a, "/v1/customers", 100).await;
    assert_eq!(oldest.last().expect("last")["id"], "cus_given1");
    t.post(&format!("/_sim/accounts/{a}/objects"), json!([{"id": "cus_given1", "object": "customer", "email": "changed@example.com", "created": 1_000}])).await;
    let ev = t.ok(&a, "/v1/events?type=customer.updated&limit=1").await;
    let e = &ev["data"][0];
    assert_eq!(e["data"]["object"]["email"], "changed@example.com");
    assert_eq!(
        e["data"]["previous_attributes"]["email"],
        "given@example.com"
    );
    assert_eq!(e["account"], json!(a));
    assert!(e["api_version"].is_string());
    t.post(&format!("/_sim/accounts/{a}/objects"), json!([{"id": "cus_given1", "object": "customer", "deleted": true}, {"id": "prod_given1", "object": "product", "deleted": true}])).await;
    assert_eq!(
        t.ok(&a, "/v1/customers/cus_given1").await,
        json!({"id": "cus_given1", "object": "customer", "deleted": true})
    );
    assert_eq!(
        t.ok(&a, "/v1/products/prod_given1").await,
        json!({"id": "prod_given1", "object": "product", "deleted": true})
    );
    assert!(!ids(&t.all(&a, "/v1/customers", 100).await).contains(&"cus_given1".to_string()));
    assert_eq!(t.counts(&a).await["customers"].as_u64(), Some(before));
    let deleted = t.ok(&a, "/v1/events?type=customer.deleted").await;
    assert_eq!(deleted["data"][0]["data"]["object"]["id"], "cus_given1");
    // Event type filters.
    let wild = t.all(&a, "/v1/events?type=customer.*", 100).await;
    assert!(
        wild.len() >= 3
            && wild
                .iter()
                .all(|e| e["type"].as_str().expect("t").starts_with("customer."))
    );
    let two = t
        .all(
            &a,
            "/v1/events?types[]=customer.deleted&types[]=product.deleted",
            100,
        )
        .await;
    assert_eq!(two.len(), 2);
    let many: String = (0..21).map(|i| format!("&types[]=t{i}.x")).collect();
    assert_eq!(t.get(&a, &format!("/v1/events?limit=1{many}")).await.0, 400);
    // A new account from the control API.
    let n = t
        .post(
            "/_sim/accounts",
            json!({"name": "Fresh Shop", "scale": "empty"}),
        )
        .await;
    assert_eq!(n["name"], "Fresh Shop");
    assert_eq!(n["counts"]["customers"], 0);
    let nid = n["id"].as_str().expect("id");
    assert_eq!(t.ok(nid, "/v1/customers").await["data"], json!([]));
    // Even an empty account can be mutated: it gets a catalogue and new payments.
    let m = t
        .post(
            &format!("/_sim/accounts/{nid}/mutate"),
            json!({"count": 3, "seed": 1}),
        )
        .await;
    assert_eq!(m["count"], 3);
    let c = t.counts(nid).await;
    assert!(
        c["checkout_sessions"].as_u64() >= Some(3) && c["charges"].as_u64() >= Some(3),
        "{c}"
    );
    let (s, _) = t
        .control(
            reqwest::Method::POST,
            "/_sim/accounts",
            Some(json!({"id": nid})),
        )
        .await;
    assert_eq!(s, 409);
    let (s, _) = t
        .control(
            reqwest::Method::POST,
            "/_sim/accounts",
            Some(json!({"scale": "huge"})),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn mutate_changes_old_objects_with_events() {
    let t = T::start(1, 42).await;
    let a = t.acct(0);
    let r = t
        .post(
            &format!("/_sim/accounts/{a}/mutate"),
            json!({"count": 40, "seed": 9}),
        )
        .await;
    assert_eq!(r["count"], 40);
    let kinds: HashSet<&str> = r["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["kind"].as_str())
        .collect();
    for k in [
        "subscription_canceled",
        "refund",
        "email_updated",
        "customer_deleted",
        "new_payment",
    ] {
        assert!(kinds.contains(k), "no {k} in {kinds:?}");
    }
    let events = t.all(&a, "/v1/events", 100).await;
    let listed: HashSet<String> = ids(&events).into_iter().collect();
    for id in r["events"].as_array().expect("events") {
        assert!(listed.contains(id.as_str().expect("id")));
    }
    let types: HashSet<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    for ty in [
        "customer.subscription.deleted",
        "charge.refunded",
        "customer.updated",
        "customer.deleted",
        "checkout.session.completed",
    ] {
        assert!(types.contains(ty), "no {ty} event");
    }
    let upd = events
        .iter()
        .find(|e| e["type"] == "customer.updated")
        .expect("update");
    assert!(upd["data"]["previous_attributes"]["email"].is_string());
    // The counts still agree with what lists return.
    let counts = t.counts(&a).await;
    assert_eq!(
        t.all(&a, "/v1/refunds", 100).await.len() as u64,
        counts["refunds"].as_u64().expect("n")
    );
    assert_eq!(
        t.all(&a, "/v1/customers", 100).await.len() as u64,
        counts["customers"].as_u64().expect("n")
    );
}

#[tokio::test]
async fn same_seed_same_objects() {
    let day = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs()
            / 86_400
    };
    let d0 = day();
    let a = T::start(2, 77).await;
    let b = T::start(2, 77).await;
    let c = T::start(2, 78).await;
    assert_eq!(a.sim.accounts(), b.sim.accounts());
    assert_ne!(a.sim.accounts(), c.sim.accounts());
    if day() != d0 {
        notice(
            "same_seed_same_objects: the UTC day changed during the test; object timestamps not compared",
        );
        return;
    }
    for path in [
        "/v1/customers",
        "/v1/invoices",
        "/v1/subscriptions?status=all",
        "/v1/checkout/sessions",
    ] {
        let x = a.all(&a.acct(1), path, 100).await;
        let y = b.all(&b.acct(1), path, 100).await;
        assert_eq!(x, y, "{path}");
    }
}

// ---------- OAuth ----------

fn query_of(location: &str) -> Vec<(String, String)> {
    let u = url::Url::parse(location).expect("location url");
    u.query_pairs().into_owned().collect()
}

fn param(q: &[(String, String)], k: &str) -> Option<String> {
    q.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone())
}

#[tokio::test]
async fn oauth_authorize_token_deauthorize() {
    let t = T::start(2, 51).await;
    let a = t.acct(1);
    let authorize = format!(
        "{}/oauth/authorize?response_type=code&client_id=ca_test&scope=read_write&redirect_uri=http%3A%2F%2Fapp.test%2Fcb&state=st8",
        t.base
    );
    let page = t.http.get(&authorize).send().await.expect("page");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains(&t.acct(0)) && html.contains(&a));
    let deny = t
        .http
        .get(format!("{authorize}&sim_decision=deny"))
        .send()
        .await
        .expect("deny");
    assert_eq!(deny.status(), 302);
    let q = query_of(deny.headers()["location"].to_str().expect("loc"));
    assert_eq!(
        (param(&q, "error"), param(&q, "state")),
        (Some("access_denied".into()), Some("st8".into()))
    );
    let code = |t: &T| {
        let url = format!("{authorize}&sim_account={a}");
        let http = t.http.clone();
        async move {
            let r = http.get(url).send().await.expect("approve");
            assert_eq!(r.status(), 302);
            let loc = r.headers()["location"].to_str().expect("loc").to_string();
            assert!(loc.starts_with("http://app.test/cb?"));
            let q = query_of(&loc);
            assert_eq!(param(&q, "state").as_deref(), Some("st8"));
            param(&q, "code").expect("code")
        }
    };
    let token = |code: String| {
        let http = t.http.clone();
        let url = format!("{}/oauth/token", t.base);
        async move {
            let r = http
                .post(url)
                .bearer_auth(KEY)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                ])
                .send()
                .await
                .expect("token");
            (r.status().as_u16(), r.json::<Value>().await.expect("json"))
        }
    };
    let c1 = code(&t).await;
    let (s, b) = token(c1.clone()).await;
    assert_eq!(s, 200, "{b}");
    for k in [
        "access_token",
        "refresh_token",
        "token_type",
        "stripe_publishable_key",
        "stripe_user_id",
        "scope",
        "livemode",
    ] {
        assert!(b.get(k).is_some(), "token response lacks {k}");
    }
    assert_eq!(
        (
            b["stripe_user_id"].as_str(),
            b["livemode"].as_bool(),
            b["token_type"].as_str()
        ),
        (Some(a.as_str()), Some(false), Some("bearer"))
    );
    let (s, b) = token(c1).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_grant")),
        "a code works once"
    );
    assert!(b["error_description"].is_string());
    let (s, _) = token("ac_bogus".into()).await;
    assert_eq!(s, 400);
    let c2 = code(&t).await;
    t.post("/_sim/clock", json!({"advance_seconds": 301})).await;
    let (s, b) = token(c2).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (400, Some("invalid_grant")),
        "codes expire after 5 minutes"
    );
    // Deauthorize revokes; a new authorization restores access.
    let r = t
        .http
        .post(format!("{}/oauth/deauthorize", t.base))
        .bearer_auth(KEY)
        .form(&[("client_id", "ca_test"), ("stripe_user_id", a.as_str())])
        .send()
        .await
        .expect("deauth");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.expect("json"),
        json!({"stripe_user_id": a})
    );
    assert_eq!(t.get(&a, "/v1/customers").await.0, 403);
    let r = t
        .http
        .post(format!("{}/oauth/deauthorize", t.base))
        .bearer_auth(KEY)
        .form(&[("client_id", "ca_test"), ("stripe_user_id", a.as_str())])
        .send()
        .await
        .expect("deauth");
    assert!(r.status().is_client_error());
    let c3 = code(&t).await;
    assert_eq!(token(c3).await.0, 200);
    assert_eq!(t.get(&a, "/v1/customers").await.0, 200);
    let r = t
        .http
        .post(format!("{}/oauth/token", t.base))
        .bearer_auth("nope")
        .form(&[("grant_type", "authorization_code"), ("code", "x")])
        .send()
        .await
        .expect("t");
    assert_eq!(r.status(), 401);
    let stats = t
        .control(reqwest::Method::GET, "/_sim/requests", None)
        .await
        .1;
    assert_eq!(stats["by_route"]["POST /oauth/deauthorize"]["200"], 1);
}

// ---------- faults, clock ----------

#[tokio::test]
async fn faults_and_connection_reuse() {
    let t = T::start(1, 61).await;
    let a = t.acct(0);
    // One pooled client: several requests, one connection.
    let c0 = t
        .control(reqwest::Method::GET, "/_sim/requests", None)
        .await
        .1["connections"]
        .as_u64()
        .expect("n");
    let pooled = reqwest::Client::new();
    for _ in 0..5 {
        let r = pooled
            .get(format!("{}/v1/customers", t.base))
            .bearer_auth(KEY)
            .header("Stripe-Account", &a)
            .send()
            .await
            .expect("r");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    }
    let c1 = t
        .control(reqwest::Method::GET, "/_sim/requests", None)
        .await
        .1["connections"]
        .as_u64()
        .expect("n");
    assert!(
        c1 - c0 <= 2,
        "pooled requests opened {} connections",
        c1 - c0
    );
    t.post("/_sim/faults", json!({"rate_limit_per_second": 1}))
        .await;
    let mut limited = None;
    for _ in 0..5 {
        let (s, b, h) = t
            .get_with(Some(KEY), Some(&a), "/v1/customers?limit=1")
            .await;
        if s == 429 {
            limited = Some((b, h));
            break;
        }
    }
    let (b, h) = limited.expect("throttled within 5 requests at 1/s");
    assert_eq!(b["error"]["code"], "rate_limit");
    assert_eq!(h["stripe-should-retry"], "true");
    t.post("/_sim/faults", json!({"error_ratio": 1.0})).await;
    let (s, b, _) = t.get_with(Some(KEY), Some(&a), "/v1/customers").await;
    assert_eq!((s, b["error"]["type"].clone()), (500, json!("api_error")));
    t.post("/_sim/faults", json!({"lock_timeout_ratio": 1.0}))
        .await;
    let (s, b, _) = t.get_with(Some(KEY), Some(&a), "/v1/customers").await;
    assert_eq!(
        (s, b["error"]["code"].clone()),
        (429, json!("lock_timeout"))
    );
    t.post("/_sim/faults", json!({"reset_ratio": 1.0})).await;
    let fresh = reqwest::Client::new();
    let r = fresh
        .get(format!("{}/v1/customers", t.base))
        .bearer_auth(KEY)
        .header("Stripe-Account", &a)
        .send()
        .await;
    let failed = match r {
        Err(_) => true,
        Ok(res) => res.bytes().await.is_err(),
    };
    assert!(failed, "a reset connection must not deliver a response");
    t.post("/_sim/faults", json!({"latency_ms": 20})).await;
    assert_eq!(t.get(&a, "/v1/customers").await.0, 200);
    t.post("/_sim/faults", json!({})).await;
    assert_eq!(t.get(&a, "/v1/customers").await.0, 200);
    let stats = t
        .control(reqwest::Method::GET, "/_sim/requests", None)
        .await
        .1;
    let r = &stats["by_route"]["GET /v1/customers"];
    assert!(
        r["429"].as_u64() >= Some(2)
            && r["500"] == 1
            && r["reset"] == 1
            && r["200"].as_u64() >= Some(6),
        "{stats}"
    );
    assert!(stats["total"].as_u64() >= Some(12));
}

#[tokio::test]
async fn clock_moves_retention() {
    let t = T::start(1, 71).await;
    let a = t.acct(0);
    let r = t
        .post(
            &format!("/_sim/accounts/{a}/mutate"),
            json!({"count": 3, "seed": 1}),
        )
        .await;
    let evt = r["events"][0].as_str().expect("evt").to_string();
    assert_eq!(t.get(&a, &format!("/v1/events/{evt}")).await.0, 200);
    let c0 = t.control(reqwest::Method::GET, "/_sim/clock", None).await.1["now"]
        .as_i64()
        .expect("now");
    t.post("/_sim/clock", json!({"advance_seconds": 20 * 86_400}))
        .await;
    assert_eq!(t.get(&a, &format!("/v1/events/{evt}")).await.0, 200);
    t.post("/_sim/clock", json!({"advance_seconds": 11 * 86_400}))
        .await;
    assert_eq!(
        t.get(&a, &format!("/v1/events/{evt}")).await.0,
        404,
        "30-day retention"
    );
    assert_eq!(t.ok(&a, "/v1/events").await["data"], json!([]));
    // New objects follow the moved clock.
    let r = t
        .post(
            &format!("/_sim/accounts/{a}/objects"),
            json!([{"object": "customer", "email": "late@example.com"}]),
        )
        .await;
    let e = t
        .ok(
            &a,
            &format!("/v1/events/{}", r["events"][0].as_str().expect("id")),
        )
        .await;
    assert!(e["created"].as_i64().expect("created") >= c0 + 31 * 86_400);
    assert!(e["data"]["object"]["created"].as_i64().expect("c") >= c0 + 31 * 86_400);
}

// ---------- webhooks ----------

type Received = Arc<Mutex<Vec<(String, String, String)>>>;

async fn receiver() -> (String, Received, actix_web::dev::ServerHandle) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let got: Received = Arc::new(Mutex::new(Vec::new()));
    let data = web::Data::new(got.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).route(
            "/{path}",
            web::post().to(
                |req: HttpRequest, body: web::Bytes, got: web::Data<Received>| async move {
                    let sig = req
                        .headers()
                        .get("stripe-signature")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    got.lock().expect("lock").push((
                        req.path().to_string(),
                        sig,
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    HttpResponse::Ok().finish()
                },
            ),
        )
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (format!("http://{addr}"), got, handle)
}

fn verify(secret: &str, header: &str, body: &str) -> bool {
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = Some(v.to_string()),
            Some(("v1", v)) => sigs.push(v.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac");
    mac.update(format!("{t}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    sigs.contains(&expected)
}

async fn wait_for(got: &Received, n: usize) -> Vec<(String, String, String)> {
    for _ in 0..400 {
        if got.lock().expect("lock").len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    got.lock().expect("lock").clone()
}

#[tokio::test]
async fn webhooks_are_signed_and_routed() {
    let t = T::start(2, 81).await;
    let (a, b) = (t.acct(0), t.acct(1));
    let (url, got, handle) = receiver().await;
    // A receiver that is down must not hold up the others.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}/dead", dead.local_addr().expect("addr"));
    drop(dead);
    t.post(
        "/_sim/webhooks",
        json!({"url": dead_url, "secret": "whsec_dead", "connect": true}),
    )
    .await;
    t.post(
        "/_sim/webhooks",
        json!({"url": format!("{url}/connect"), "secret": "whsec_connect", "connect": true}),
    )
    .await;
    t.post(
        "/_sim/webhooks",
        json!({"url": format!("{url}/own"), "secret": "whsec_own", "connect": false, "account": b}),
    )
    .await;
    let ra = t
        .post(
            &format!("/_sim/accounts/{a}/mutate"),
            json!({"count": 4, "seed": 3}),
        )
        .await;
    let rb = t
        .post(
            &format!("/_sim/accounts/{b}/mutate"),
            json!({"count": 3, "seed": 4}),
        )
        .await;
    let na = ra["events"].as_array().expect("e").len();
    let nb = rb["events"].as_array().expect("e").len();
    t.post(&format!("/_sim/accounts/{a}/revoke"), json!({}))
        .await;
    // The platform's own endpoint: only the platform account's events.
    t.post(
        "/_sim/webhooks",
        json!({"url": format!("{url}/platform"), "secret": "whsec_platform"}),
    )
    .await;
    let (_, platform) = t
        .control(reqwest::Method::GET, "/_sim/platform", None)
        .await;
    let pid = platform["id"].as_str().expect("platform id");
    t.post(
        &format!("/_sim/accounts/{pid}/objects"),
        json!([{"object": "customer", "email": "agency@example.com"}]),
    )
    .await;
    let all = wait_for(&got, na + nb + 1 + nb + 1).await;
    let connect: Vec<_> = all.iter().filter(|(p, _, _)| p == "/connect").collect();
    let own: Vec<_> = all.iter().filter(|(p, _, _)| p == "/own").collect();
    let plat: Vec<_> = all.iter().filter(|(p, _, _)| p == "/platform").collect();
    assert_eq!(connect.len(), na + nb + 1);
    assert_eq!(own.len(), nb);
    assert_eq!(plat.len(), 1);
    assert!(verify("whsec_platform", &plat[0].1, &plat[0].2));
    let pe: Value = serde_json::from_str(&plat[0].2).expect("json");
    assert_eq!(
        (pe["type"].as_str(), pe.get("account")),
        (Some("customer.created"), None)
    );
    // The counters move once the receiver has answered, a moment after it saw the body.
    let mut delivered = 0;
    for _ in 0..400 {
        let (_, hooks) = t
            .control(reqwest::Method::GET, "/_sim/webhooks", None)
            .await;
        delivered = hooks
            .as_array()
            .expect("hooks")
            .iter()
            .map(|h| h["delivered"].as_u64().expect("n"))
            .sum::<u64>() as usize;
        if delivered >= all.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(delivered, all.len());
    let (_, hooks) = t
        .control(reqwest::Method::GET, "/_sim/webhooks", None)
        .await;
    assert_eq!(hooks[0]["delivered"], 0, "nothing reaches a closed port");
    for (_, sig, body) in &connect {
        assert!(verify("whsec_connect", sig, body), "bad signature");
        assert!(!verify("whsec_own", sig, body));
        let e: Value = serde_json::from_str(body).expect("json");
        assert!(e["account"] == json!(a) || e["account"] == json!(b));
        assert_eq!(e["object"], "event");
    }
    for (_, sig, body) in &own {
        assert!(verify("whsec_own", sig, body));
        let e: Value = serde_json::from_str(body).expect("json");
        assert!(
            e.get("account").is_none(),
            "a plain endpoint gets no account field"
        );
    }
    let last: Value = serde_json::from_str(&connect.last().expect("last").2).expect("json");
    assert_eq!(last["type"], "account.application.deauthorized");
    assert_eq!(last["account"], json!(a));
    let tampered = connect[0].2.replacen("\"object\"", "\"objekt\"", 1);
    assert!(!verify("whsec_connect", &connect[0].1, &tampered));
    handle.stop(false).await;
}

// ---------- the official client ----------

#[tokio::test]
async fn oracle_official_python_client() {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import stripe"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but the Python `stripe` package is missing: pip install stripe==16.1.0"
        );
        notice(
            "SKIP oracle_official_python_client: python3 with the `stripe` package is not installed (pip install stripe==16.1.0)",
        );
        return;
    }
    let t = T::start(2, 91).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&t.base)
        .kill_on_drop(true)
        .output();
    // A generous bound so a wedged run fails instead of hanging CI; not a speed assertion.
    let out = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("oracle.py finished within 10 minutes")
        .expect("run oracle.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "oracle failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ORACLE OK"), "{stdout}");
}

#[actix_web::test]
async fn starts_under_the_actix_runtime() {
    let sim = SimServer::start(SimOptions {
        seed: 3,
        accounts: 1,
        ..Default::default()
    })
    .await
    .expect("start");
    assert!(sim.base_url().starts_with("http://127.0.0.1:"));
    let r = reqwest::Client::new()
        .get(format!("{}/v1/account", sim.base_url()))
        .bearer_auth(KEY)
        .header("Stripe-Account", &sim.accounts()[0])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    sim.stop().await;
}

#[test]
fn scales_parse() {
    assert_eq!("bench".parse::<Scale>(), Ok(Scale::Bench));
    assert_eq!("Medium".parse::<Scale>(), Ok(Scale::Medium));
    assert_eq!("empty".parse::<Scale>(), Ok(Scale::Empty));
    assert!("huge".parse::<Scale>().is_err());
    assert_eq!(Scale::default(), Scale::Small);
}
