//! Contacts, Sales and dashboards (SPEC §7–§9) against a hand-built simulator account whose
//! every total is known: the three contacts reads, the dashboards (the worked example of
//! `docs/metrics.md`), the read-model consistency check, and bad input.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tributary_domain::metrics::Month;
use tributary_domain::{BusinessId, Email, StripeAccountId, spend};
use tributary_persistence::entities::customer_spend;
use tributary_persistence::sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use tributary_persistence::testing::{Backend, TestDbRef};
use tributary_persistence::{access, db_test, reads};
use tributary_stripe_connect::{Stripe, StripeConfig};
use tributary_sync::{SyncConfig, SyncContext, Trigger};

use super::{TestApp, agency};

const BIZ: &str = "biz-sales";

/// The months of the worked example: M-3 … M0 (M0 is the current month).
struct Clock {
    m: [Month; 4],
    now: i64,
}

impl Clock {
    fn new() -> Self {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let m0 = Month::of_unix(now);
        Clock {
            m: [m0.add_months(-3), m0.add_months(-2), m0.add_months(-1), m0],
            now,
        }
    }

    /// Noon of `day` in month M-`back`; in the current month, minutes after midnight of the
    /// 1st, so they are never in the future.
    fn at(&self, back: usize, day: i64) -> i64 {
        let month = self.m[3 - back];
        if back == 0 {
            month.start() + day * 60
        } else {
            month.start() + (day - 1) * 86_400 + 43_200
        }
    }

    fn label(&self, back: usize) -> String {
        self.m[3 - back].to_string()
    }
}

fn customer(id: &str, email: &str, name: &str, created: i64) -> Value {
    json!({"id": id, "object": "customer", "email": email, "name": name, "created": created,
           "livemode": false, "currency": "usd"})
}

fn pi(
    id: &str,
    customer: Option<&str>,
    amount: i64,
    currency: &str,
    status: &str,
    created: i64,
) -> Value {
    let received = if status == "succeeded" { amount } else { 0 };
    json!({"id": id, "object": "payment_intent", "amount": amount, "amount_received": received,
           "currency": currency, "customer": customer, "status": status, "created": created,
           "receipt_email": null, "livemode": false})
}

fn invoice(
    id: &str,
    customer: &str,
    status: &str,
    amount: i64,
    paid_at: Option<i64>,
    created: i64,
) -> Value {
    let paid = if status == "paid" { amount } else { 0 };
    json!({"id": id, "object": "invoice", "customer": customer, "customer_email": null,
           "status": status, "currency": "usd", "amount_due": amount, "amount_paid": paid,
           "amount_remaining": amount - paid, "total": amount, "subtotal": amount,
           "created": created, "livemode": false, "number": format!("N-{id}"),
           "status_transitions": {"paid_at": paid_at},
           "lines": {"object": "list", "data": [], "has_more": false, "url": format!("/v1/invoices/{id}/lines")}})
}

fn invoice_payment(id: &str, invoice: &str, pi: &str, amount: i64, created: i64) -> Value {
    json!({"id": id, "object": "invoice_payment", "invoice": invoice, "amount_paid": amount,
           "amount_requested": amount, "currency": "usd", "status": "paid", "created": created,
           "is_default": true, "livemode": false,
           "payment": {"type": "payment_intent", "payment_intent": pi},
           "status_transitions": {"paid_at": created, "canceled_at": null}})
}

#[allow(clippy::too_many_arguments)]
fn session(
    id: &str,
    mode: &str,
    customer: Option<&str>,
    email: &str,
    amount: i64,
    payment_intent: Option<&str>,
    invoice: Option<&str>,
    subscription: Option<&str>,
    created: i64,
) -> Value {
    json!({"id": id, "object": "checkout.session", "mode": mode, "status": "complete",
           "payment_status": "paid", "amount_total": amount, "amount_subtotal": amount,
           "currency": "usd", "customer": customer, "customer_details": {"email": email},
           "payment_intent": payment_intent, "invoice": invoice, "subscription": subscription,
           "created": created, "livemode": false})
}

#[allow(clippy::too_many_arguments)]
fn subscription(
    id: &str,
    customer: &str,
    status: &str,
    unit_amount: i64,
    interval: &str,
    interval_count: i64,
    quantity: i64,
    start: i64,
    ended: Option<i64>,
    trial_end: Option<i64>,
) -> Value {
    json!({"id": id, "object": "subscription", "customer": customer, "status": status,
           "currency": "usd", "created": start, "start_date": start,
           "canceled_at": ended, "ended_at": ended, "cancel_at_period_end": false,
           "trial_start": trial_end.map(|_| start), "trial_end": trial_end,
           "current_period_start": start, "current_period_end": start + 86_400 * 30,
           "livemode": false, "discounts": [],
           "items": {"object": "list", "has_more": false, "data": [{
               "id": format!("si_{id}"), "object": "subscription_item", "quantity": quantity,
               "subscription": id, "created": start,
               "price": {"id": format!("price_{id}"), "object": "price", "currency": "usd",
                         "unit_amount": unit_amount, "product": "prod_plan", "type": "recurring",
                         "recurring": {"interval": interval, "interval_count": interval_count,
                                       "usage_type": "licensed"}}}]}})
}

/// Every linking case of SPEC §7, with the totals of `docs/metrics.md`'s worked example.
fn fixture(c: &Clock) -> Vec<Value> {
    let mut week = subscription(
        "sub_week",
        "cus_ada2",
        "active",
        1200,
        "week",
        2,
        2,
        c.at(2, 10),
        None,
        None,
    );
    // 50 % off, as the older `discount` field carries it.
    week["discount"] = json!({"object": "discount", "coupon": {"id": "half", "object": "coupon", "percent_off": 50.0}});
    let mut old_invoice = invoice(
        "in_old",
        "cus_bob",
        "paid",
        1500,
        Some(c.at(1, 8)),
        c.at(1, 8),
    );
    old_invoice["payment_intent"] = json!("pi_old");
    vec![
        customer("cus_ada", "Ada@Example.com", "Ada Lovelace", c.at(3, 1)),
        customer("cus_ada2", " ada@example.com", "Ada L.", c.at(2, 1)),
        customer("cus_bob", "bob@example.com", "Bob Stone", c.at(3, 1)),
        customer("cus_cy", "cy@example.com", "Cy Young", c.at(1, 1)),
        // Payment-mode checkout: the session adds nothing to its payment intent.
        pi(
            "pi_pay1",
            Some("cus_ada"),
            5000,
            "usd",
            "succeeded",
            c.at(3, 10),
        ),
        session(
            "cs_pay1",
            "payment",
            Some("cus_ada"),
            "ada@example.com",
            5000,
            Some("pi_pay1"),
            None,
            None,
            c.at(3, 10),
        ),
        // Refund of it, in M-1.
        json!({"id": "re_1", "object": "refund", "payment_intent": "pi_pay1", "charge": null,
               "amount": 1000, "currency": "usd", "status": "succeeded", "created": c.at(1, 3),
               "livemode": false}),
        // Invoice paid through an invoice payment (current API), duplicate customer of Ada.
        invoice(
            "in_1",
            "cus_ada2",
            "paid",
            3000,
            Some(c.at(2, 5)),
            c.at(2, 5),
        ),
        pi(
            "pi_inv1",
            Some("cus_ada2"),
            3000,
            "usd",
            "succeeded",
            c.at(2, 5),
        ),
        invoice_payment("inpay_1", "in_1", "pi_inv1", 3000, c.at(2, 5)),
        // A second currency: Ada's primary currency becomes EUR (8000 > 7000 net USD).
        pi(
            "pi_eur",
            Some("cus_ada"),
            8000,
            "eur",
            "succeeded",
            c.at(1, 20),
        ),
        // Out-of-band invoice: its own movement.
        invoice(
            "in_oob",
            "cus_bob",
            "paid",
            2000,
            Some(c.at(2, 20)),
            c.at(2, 20),
        ),
        // Older API link invoice.payment_intent.
        old_invoice,
        pi(
            "pi_old",
            Some("cus_bob"),
            1500,
            "usd",
            "succeeded",
            c.at(1, 8),
        ),
        // Failed payment and an open invoice: nothing.
        pi(
            "pi_fail",
            Some("cus_bob"),
            7000,
            "usd",
            "requires_payment_method",
            c.at(1, 9),
        ),
        invoice("in_open", "cus_bob", "open", 1200, None, c.at(1, 9)),
        // A charge without a payment intent.
        json!({"id": "ch_legacy", "object": "charge", "amount": 600, "amount_captured": 600,
               "currency": "usd", "customer": "cus_bob", "payment_intent": null, "paid": true,
               "status": "succeeded", "created": c.at(0, 1), "receipt_email": null,
               "billing_details": {"email": null}, "livemode": false}),
        // Subscription-mode checkout: the session links through its invoice.
        session(
            "cs_sub",
            "subscription",
            Some("cus_cy"),
            "cy@example.com",
            2500,
            None,
            Some("in_sub1"),
            Some("sub_cy"),
            c.at(1, 1),
        ),
        invoice(
            "in_sub1",
            "cus_cy",
            "paid",
            2500,
            Some(c.at(1, 1)),
            c.at(1, 1),
        ),
        pi(
            "pi_sub1",
            Some("cus_cy"),
            2500,
            "usd",
            "succeeded",
            c.at(1, 1),
        ),
        invoice_payment("inpay_sub1", "in_sub1", "pi_sub1", 2500, c.at(1, 1)),
        // Guest checkout: no customer; the session's email names who paid.
        pi("pi_guest", None, 4200, "usd", "succeeded", c.at(0, 2)),
        session(
            "cs_guest",
            "payment",
            None,
            "Gina@Example.com",
            4200,
            Some("pi_guest"),
            None,
            None,
            c.at(0, 2),
        ),
        // A paid session with nothing linked: its own movement.
        session(
            "cs_unl",
            "payment",
            None,
            "hal@example.com",
            999,
            None,
            None,
            None,
            c.at(0, 3),
        ),
        // Subscriptions: yearly (10000/month) cancelled in M-1, two-weekly × 2 at 50 % off
        // (1200 × 2 × 52 ÷ 12 ÷ 2 ÷ 2 = 2600), monthly 2500, and a trial.
        subscription(
            "sub_bob_y",
            "cus_bob",
            "canceled",
            120_000,
            "year",
            1,
            1,
            c.at(3, 1),
            Some(c.at(1, 15)),
            None,
        ),
        week,
        subscription(
            "sub_cy",
            "cus_cy",
            "active",
            2500,
            "month",
            1,
            1,
            c.at(1, 1),
            None,
            None,
        ),
        subscription(
            "sub_ada_trial",
            "cus_ada",
            "trialing",
            1000,
            "month",
            1,
            1,
            c.at(0, 4),
            None,
            Some(c.now + 30 * 86_400),
        ),
    ]
}

/// Connects `BIZ` to the simulator's first account, stores the fixture there and syncs.
async fn seeded(t: &TestDbRef) -> (TestApp, Clock, SyncContext) {
    let app = TestApp::spawn(t).await;
    let clock = Clock::new();
    let acct = app.account(0);
    app.sim_control(
        &format!("/_sim/accounts/{acct}/objects"),
        Value::Array(fixture(&clock)),
    )
    .await;
    let stripe = Stripe::new(
        StripeConfig::new(SecretString::from("sk_test_contacts")).with_base(app.sim.base_url()),
    )
    .unwrap();
    let ctx = SyncContext::new(t.db.clone(), stripe, SyncConfig::default());
    let business = BusinessId::parse(BIZ).unwrap();
    let account = StripeAccountId::parse(&acct).unwrap();
    access::connect(
        &t.db,
        &business,
        access::NewConnection {
            account: &account,
            account_name: None,
            livemode: false,
            scope: "read_write",
        },
        ctx.now(),
    )
    .await
    .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(120),
        tributary_sync::fetch_stripe_data(&ctx, &business, Trigger::Manual),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(report.succeeded(), "{report:?}");
    (app, clock, ctx)
}

fn token() -> String {
    agency(&[BIZ])
}

fn emails_of(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["email"].as_str().unwrap().to_owned())
        .collect()
}

/// `POST /api/contacts/stripe-summary-by-emails` of `BIZ` for `emails`, answered `200`.
async fn summaries(app: &TestApp, tok: &str, emails: Value) -> super::Answer {
    let a = app
        .send(
            reqwest::Method::POST,
            "/api/contacts/stripe-summary-by-emails",
            Some(tok),
            Some(json!({"businessId": BIZ, "emails": emails})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a
}

fn rfc(secs: i64) -> String {
    tributary_web::views::rfc3339(secs)
}

db_test!(every_linking_case_counts_once_on_all_three_reads, |t| {
    let (app, c, _ctx) = seeded(&t).await;
    let tok = token();

    // 1. The grid, by primary net.
    let res = app
        .get(
            &format!("/api/contacts/stripe-customers?businessId={BIZ}"),
            &tok,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let grid = res.json();
    assert_eq!(grid["total"], 5);
    assert_eq!(
        (grid["page"].clone(), grid["per_page"].clone()),
        (json!(1), json!(50))
    );
    assert_eq!(
        emails_of(&grid),
        [
            "ada@example.com",
            "gina@example.com",
            "bob@example.com",
            "cy@example.com",
            "hal@example.com"
        ]
    );
    let ada = &grid["items"][0];
    assert_eq!(
        *ada,
        json!({
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "customer_ids": ["cus_ada", "cus_ada2"],
            "totals": [
                {"currency": "eur", "gross": 8000, "refunded": 0, "net": 8000},
                {"currency": "usd", "gross": 8000, "refunded": 1000, "net": 7000},
            ],
            "order_count": 3,
            "last_purchase_at": rfc(c.at(1, 20)),
            "currency": "eur",
            "contact_match": null,
        })
    );
    let by_email = |v: &Value, e: &str| -> Value {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["email"] == e)
            .unwrap()
            .clone()
    };
    let bob = by_email(&grid, "bob@example.com");
    assert_eq!(
        bob["totals"],
        json!([{"currency": "usd", "gross": 4100, "refunded": 0, "net": 4100}])
    );
    assert_eq!(bob["order_count"], 3);
    assert_eq!(bob["last_purchase_at"], rfc(c.at(0, 1)));
    let gina = by_email(&grid, "gina@example.com");
    assert_eq!(gina["customer_ids"], json!([]));
    assert_eq!(gina["totals"][0]["net"], 4200);
    assert_eq!(by_email(&grid, "cy@example.com")["totals"][0]["net"], 2500);
    assert_eq!(by_email(&grid, "hal@example.com")["totals"][0]["net"], 999);

    // Sorting, paging, search, currency.
    let list = |q: String| {
        let app = &app;
        let tok = tok.clone();
        async move {
            let res = app
                .get(
                    &format!("/api/contacts/stripe-customers?businessId={BIZ}&{q}"),
                    &tok,
                )
                .await;
            assert_eq!(res.status, StatusCode::OK, "{q}: {}", res.text);
            res.json()
        }
    };
    assert_eq!(
        emails_of(&list("sort=last_purchase".into()).await),
        [
            "hal@example.com",
            "gina@example.com",
            "bob@example.com",
            "ada@example.com",
            "cy@example.com"
        ]
    );
    assert_eq!(
        emails_of(&list("sort=email&order=asc".into()).await),
        [
            "ada@example.com",
            "bob@example.com",
            "cy@example.com",
            "gina@example.com",
            "hal@example.com"
        ]
    );
    assert_eq!(
        emails_of(&list("sort=total_spent&order=asc&currency=usd".into()).await),
        [
            "hal@example.com",
            "cy@example.com",
            "bob@example.com",
            "gina@example.com",
            "ada@example.com"
        ]
    );
    let eur = list("currency=eur".into()).await;
    assert_eq!(emails_of(&eur), ["ada@example.com"]);
    assert_eq!(eur["total"], 1);
    let page2 = list("per_page=2&page=2".into()).await;
    assert_eq!(emails_of(&page2), ["bob@example.com", "cy@example.com"]);
    assert_eq!(page2["total"], 5);
    assert_eq!(emails_of(&list("q=ADA".into()).await), ["ada@example.com"]);
    assert_eq!(
        emails_of(&list("q=lovelace".into()).await),
        ["ada@example.com"]
    );
    assert_eq!(emails_of(&list("q=%25".into()).await), Vec::<String>::new());
    assert_eq!(list("q=nobody".into()).await["total"], 0);

    // The POST variant marks contacts.
    let res = app
        .send(
            reqwest::Method::POST,
            "/api/contacts/stripe-customers?sort=email&order=asc&per_page=3",
            Some(&tok),
            Some(json!({"businessId": BIZ, "contact_emails": [" BOB@example.com", "zed@example.com"]})),
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    let matched = res.json();
    let flags: Vec<Value> = matched["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["contact_match"].clone())
        .collect();
    assert_eq!(flags, [json!(false), json!(true), json!(false)]);
    assert_eq!(matched["per_page"], 3);

    // 2. Summary by emails: same totals; unknown emails absent.
    let emails = json!([
        "ADA@example.com",
        "gina@example.com",
        "nobody@example.com",
        "ada@example.com"
    ]);
    let s = summaries(&app, &tok, emails).await.json();
    assert_eq!(
        s,
        json!({"summaries": {
            "ada@example.com": {"totals": ada["totals"], "order_count": 3, "last_purchase_at": rfc(c.at(1, 20))},
            "gina@example.com": {"totals": gina["totals"], "order_count": 1, "last_purchase_at": rfc(c.at(0, 2))},
        }})
    );

    // 3. Stripe info: every object, each payment once.
    let info = |email: &str| {
        let app = &app;
        let tok = tok.clone();
        let email = email.to_owned();
        async move {
            let res = app
                .get(
                    &format!("/api/contacts/stripe-info?businessId={BIZ}&email={email}"),
                    &tok,
                )
                .await;
            assert_eq!(res.status, StatusCode::OK, "{}", res.text);
            res.json()
        }
    };
    let ids = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let a = info("Ada%40Example.com").await;
    assert_eq!(ids(&a, "customers"), ["cus_ada", "cus_ada2"]);
    assert_eq!(ids(&a, "payments"), ["pi_eur", "pi_inv1", "pi_pay1"]);
    assert_eq!(ids(&a, "invoices"), ["in_1"]);
    assert_eq!(ids(&a, "checkout_sessions"), ["cs_pay1"]);
    assert_eq!(ids(&a, "subscriptions"), ["sub_ada_trial", "sub_week"]);
    assert_eq!(a["summary"], s["summaries"]["ada@example.com"]);
    let pay1 = &a["payments"][2];
    assert_eq!(
        (
            pay1["amount"].clone(),
            pay1["refunded"].clone(),
            pay1["currency"].clone(),
            pay1["checkout_session"].clone(),
            pay1["status"].clone()
        ),
        (
            json!(5000),
            json!(1000),
            json!("usd"),
            json!("cs_pay1"),
            json!("succeeded")
        )
    );
    assert_eq!(pay1["created"], rfc(c.at(3, 10)));
    assert_eq!(a["payments"][1]["invoice"], "in_1");
    let week = &a["subscriptions"][1];
    assert_eq!(
        (week["mrr"].clone(), week["status"].clone()),
        (json!(2600), json!("active"))
    );
    assert_eq!(week["items"][0]["interval"], "week");
    assert_eq!(a["subscriptions"][0]["mrr"], 0);

    let b = info("bob@example.com").await;
    assert_eq!(ids(&b, "payments"), ["ch_legacy", "pi_old", "in_oob"]);
    assert_eq!(b["payments"][1]["invoice"], "in_old");
    assert_eq!(b["payments"][2]["source"], "invoice");
    assert_eq!(ids(&b, "invoices"), ["in_open", "in_old", "in_oob"]);
    assert_eq!(ids(&b, "subscriptions"), ["sub_bob_y"]);
    assert_eq!(b["summary"]["totals"], bob["totals"]);

    let g = info("gina@example.com").await;
    assert_eq!(ids(&g, "customers"), Vec::<String>::new());
    assert_eq!(ids(&g, "payments"), ["pi_guest"]);
    assert_eq!(g["payments"][0]["checkout_session"], "cs_guest");
    assert_eq!(ids(&g, "checkout_sessions"), ["cs_guest"]);
    let cy = info("cy@example.com").await;
    assert_eq!(ids(&cy, "payments"), ["pi_sub1"]);
    assert_eq!(
        (
            cy["payments"][0]["invoice"].clone(),
            cy["payments"][0]["checkout_session"].clone()
        ),
        (json!("in_sub1"), json!("cs_sub"))
    );
    let h = info("hal@example.com").await;
    assert_eq!(h["payments"][0]["source"], "checkout_session");
    assert_eq!(h["payments"][0]["amount"], 999);
    let nobody = info("nobody@example.com").await;
    assert_eq!(
        nobody["summary"],
        json!({"totals": [], "order_count": 0, "last_purchase_at": null})
    );
    assert_eq!(ids(&nobody, "payments"), Vec::<String>::new());

    app.stop().await;
});

db_test!(
    per_email_graphs_agree_with_the_whole_business_and_verify_catches_drift,
    |t| {
        let (app, _c, _ctx) = seeded(&t).await;
        let business = BusinessId::parse(BIZ).unwrap();
        let conn = t.db.conn();
        // The index-served per-email load attributes exactly what the whole mirror does.
        let (facts, _) = tributary_sync::readmodel::load_facts(conn, &business)
            .await
            .unwrap();
        let all = spend::movements(&facts);
        let stored = reads::all_spend(conn, &business).await.unwrap();
        assert!(!stored.is_empty());
        for email in stored
            .iter()
            .map(|r| r.email.clone())
            .collect::<std::collections::BTreeSet<String>>()
        {
            let email = Email::parse(&email).unwrap();
            let graph = reads::email_graph(conn, &business, &email).await.unwrap();
            let mine: Vec<_> = spend::movements(&reads::graph_facts(&graph))
                .into_iter()
                .filter(|m| m.email.as_ref() == Some(&email))
                .collect();
            let want: Vec<_> = all
                .iter()
                .filter(|m| m.email.as_ref() == Some(&email))
                .cloned()
                .collect();
            assert_eq!(mine, want, "{email:?}");
        }

        // The consistency check passes, then names a tampered row.
        let ok = tributary_sync::verify::verify_spend(conn, &business)
            .await
            .unwrap();
        assert!(ok.is_consistent(), "{ok:?}");
        assert_eq!(ok.expected_rows, 6);
        customer_spend::Entity::update_many()
            .col_expr(customer_spend::Column::Net, Expr::value(1i64))
            .filter(customer_spend::Column::BusinessId.eq(BIZ))
            .filter(customer_spend::Column::Email.eq("bob@example.com"))
            .exec(conn)
            .await
            .unwrap();
        let drift = tributary_sync::verify::verify_spend(conn, &business)
            .await
            .unwrap();
        assert!(!drift.is_consistent());
        assert_eq!(drift.differences.len(), 1, "{drift:?}");
        assert!(
            drift.differences[0].starts_with("bob@example.com usd"),
            "{drift:?}"
        );
        app.stop().await;
    }
);

/// A business synced from a realistic generated account (every link type the simulator
/// produces, `small` scale).
async fn generated_account(t: &TestDbRef) -> (TestApp, BusinessId) {
    let app = TestApp::spawn_with(
        t,
        crate::Opts {
            accounts: 1,
            scale: tributary_stripe_sim::Scale::Small,
            ..Default::default()
        },
    )
    .await;
    let stripe = Stripe::new(
        StripeConfig::new(SecretString::from("sk_test_contacts")).with_base(app.sim.base_url()),
    )
    .unwrap();
    let ctx = SyncContext::new(t.db.clone(), stripe, SyncConfig::default());
    let business = BusinessId::parse(BIZ).unwrap();
    let account = StripeAccountId::parse(&app.account(0)).unwrap();
    access::connect(
        &t.db,
        &business,
        access::NewConnection {
            account: &account,
            account_name: None,
            livemode: false,
            scope: "read_write",
        },
        ctx.now(),
    )
    .await
    .unwrap();
    let report = tributary_sync::fetch_stripe_data(&ctx, &business, Trigger::Manual)
        .await
        .unwrap();
    assert!(report.succeeded(), "{report:?}");
    (app, business)
}

db_test!(email_graphs_agree_on_a_generated_account, |t| {
    // For every email, stripe-info's index-served load attributes exactly what the whole
    // mirror does, and its summary equals the grid's.
    let (app, business) = generated_account(&t).await;
    let conn = t.db.conn();
    let (facts, _) = tributary_sync::readmodel::load_facts(conn, &business)
        .await
        .unwrap();
    let all = spend::movements(&facts);
    let stored = reads::all_spend(conn, &business).await.unwrap();
    let emails: std::collections::BTreeSet<String> =
        stored.iter().map(|r| r.email.clone()).collect();
    assert!(emails.len() > 10, "{}", emails.len());
    for email in &emails {
        let email = Email::parse(email).unwrap();
        let graph = reads::email_graph(conn, &business, &email).await.unwrap();
        let mine: Vec<_> = spend::movements(&reads::graph_facts(&graph))
            .into_iter()
            .filter(|m| m.email.as_ref() == Some(&email))
            .collect();
        let want: Vec<_> = all
            .iter()
            .filter(|m| m.email.as_ref() == Some(&email))
            .cloned()
            .collect();
        assert_eq!(mine, want, "{email:?}");
    }
    let v = tributary_sync::verify::verify_spend(conn, &business)
        .await
        .unwrap();
    assert!(v.is_consistent(), "{v:?}");
    // The grid pages through every email exactly once.
    let mut seen = Vec::new();
    for page in 1..=100 {
        let res = app
            .get(
                &format!("/api/contacts/stripe-customers?businessId={BIZ}&per_page=100&page={page}&sort=last_purchase"),
                &token(),
            )
            .await;
        assert_eq!(res.status, StatusCode::OK, "{}", res.text);
        let got = emails_of(&res.json());
        if got.is_empty() {
            break;
        }
        seen.extend(got);
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "an email on two pages");
    assert_eq!(sorted, emails.into_iter().collect::<Vec<_>>());
    app.stop().await;
});

/// PostgreSQL walks the link graph in one statement (`tributary_link_graph`), SQLite round by
/// round: from seeds of every kind, alone and together, on a generated account (deleted objects
/// included), the statement returns exactly the rows the rounds find, and so it does with the
/// second level of a spend refresh (`spend_graph`), with the same emails. PostgreSQL only (skipped
/// with a notice where none is configured, required with `CI=true`): SQLite has the rounds
/// only, which `email_graphs_agree_on_a_generated_account` checks on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_in_one_statement_reaches_what_the_rounds_reach() {
    tributary_persistence::testing::run(Backend::Postgres, |t| async move {
        use tributary_persistence::entities::*;
        let conn = t.db.conn();
        let (app, business) = generated_account(&t).await;
        // Every row of one mirror table of the business.
        macro_rules! all {
            ($entity:ident) => {
                $entity::Entity::find()
                    .filter($entity::Column::BusinessId.eq(BIZ))
                    .all(conn)
                    .await
                    .unwrap()
            };
        }
        let customers = all!(stripe_customers);
        let orders = all!(stripe_orders);
        let sessions = all!(stripe_checkout_sessions);
        let emails: Vec<String> = customers
            .iter()
            .filter_map(|c| c.email.clone())
            .chain(orders.iter().filter_map(|o| o.email.clone()))
            .chain(sessions.iter().filter_map(|s| s.email.clone()))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let customer_ids: Vec<String> = customers.into_iter().map(|c| c.stripe_id).collect();
        let order_ids: Vec<String> = orders.into_iter().map(|o| o.stripe_id).collect();
        let session_ids: Vec<String> = sessions.into_iter().map(|s| s.stripe_id).collect();
        let invoice_ids: Vec<String> = all!(stripe_invoices)
            .into_iter()
            .map(|i| i.stripe_id)
            .collect();
        // The payments invoice payments name, mirrored or not.
        let paid_ids: Vec<String> = all!(stripe_invoice_payments)
            .into_iter()
            .filter_map(|p| p.payment_intent.or(p.charge))
            .collect();
        let mut seeds = Vec::new();
        for (i, email) in emails.iter().enumerate() {
            seeds.push(reads::GraphSeed {
                emails: [email.clone()].into(),
                ..Default::default()
            });
            // Every third email with a few more and a few objects of each kind: a webhook
            // turn's seed.
            if i % 3 == 0 {
                let pick =
                    |ids: &[String]| ids.iter().skip(i).step_by(17).take(3).cloned().collect();
                seeds.push(reads::GraphSeed {
                    emails: emails[i..emails.len().min(i + 4)].iter().cloned().collect(),
                    customers: pick(&customer_ids),
                    orders: pick(&order_ids),
                    invoices: pick(&invoice_ids),
                    sessions: pick(&session_ids),
                });
            }
        }
        // A fifth of the ids of each kind, each alone (in the seed's set of its kind).
        type Kind = fn(&mut reads::GraphSeed) -> &mut std::collections::BTreeSet<String>;
        let alone: [(&[String], Kind); 5] = [
            (&customer_ids, |s| &mut s.customers),
            (&order_ids, |s| &mut s.orders),
            (&invoice_ids, |s| &mut s.invoices),
            (&session_ids, |s| &mut s.sessions),
            (&paid_ids, |s| &mut s.orders),
        ];
        for (ids, kind) in alone {
            for id in ids.iter().step_by(5) {
                let mut seed = reads::GraphSeed::default();
                kind(&mut seed).insert(id.clone());
                seeds.push(seed);
            }
        }
        // Ids nothing holds reach nothing.
        seeds.push(reads::GraphSeed {
            emails: ["nobody@example.com".to_owned()].into(),
            orders: ["pi_missing".to_owned()].into(),
            invoices: ["in_missing".to_owned()].into(),
            ..Default::default()
        });
        assert!(seeds.len() > 100, "{}", seeds.len());
        let mut linked = 0;
        let mut second = 0;
        for seed in &seeds {
            let rounds = reads::graph_in_rounds(conn, &business, seed).await.unwrap();
            let (statement, none) = reads::graph_in_one_statement(conn, &business, seed, false)
                .await
                .unwrap();
            assert_eq!(statement, rounds, "{seed:?}");
            assert!(none.is_empty(), "{seed:?}: {none:?}");
            let (two_rounds, emails) = reads::spend_graph_in_rounds(conn, &business, seed)
                .await
                .unwrap();
            let (two_levels, emails_too) =
                reads::graph_in_one_statement(conn, &business, seed, true)
                    .await
                    .unwrap();
            assert_eq!(two_levels, two_rounds, "{seed:?}");
            assert_eq!(emails_too, emails, "{seed:?}");
            assert!(emails.is_superset(&seed.emails), "{seed:?}");
            if two_rounds != rounds {
                second += 1;
            }
            // Seeds that reach a payment, its invoice and the invoice's payment.
            if !rounds.invoice_payments.is_empty() && !rounds.orders.is_empty() {
                linked += 1;
            }
        }
        assert!(linked > 10, "{linked} seeds reached linked invoices");
        assert!(
            second > 10,
            "{second} seeds reached more at the second level"
        );
        app.stop().await;
    })
    .await;
}

db_test!(dashboards_reproduce_the_worked_example, |t| {
    let (app, c, _ctx) = seeded(&t).await;
    let tok = token();
    let range = format!("from={}&to={}&currency=usd", c.label(3), c.label(0));
    let get = |what: &str| {
        let app = &app;
        let tok = tok.clone();
        let path = format!("/api/businesses/{BIZ}/{what}?{range}");
        async move {
            let res = app.get(&path, &tok).await;
            assert_eq!(res.status, StatusCode::OK, "{path}: {}", res.text);
            res.json()
        }
    };
    let labels: Vec<String> = (0..4).rev().map(|b| c.label(b)).collect();

    let revenue = get("revenue").await;
    let expected: Vec<Value> = labels
        .iter()
        .zip([
            (5000, 0, 5000, 10_000, 1),
            (5000, 0, 5000, 12_600, 2),
            (4000, 1000, 3000, 5100, 2),
            (5799, 0, 5799, 5100, 2),
        ])
        .map(|(m, (g, r, n, mrr, subs))| {
            json!({"month": m, "gross": g, "refunded": r, "net": n, "mrr": mrr, "arr": 12 * mrr, "active_subscriptions": subs})
        })
        .collect();
    assert_eq!(revenue, json!({"currency": "usd", "months": expected}));

    let retention = get("retention").await;
    let rates: Vec<Value> = labels
        .iter()
        .zip([
            (Value::Null, Value::Null, Value::Null),
            (json!(0.0), json!(0.0), json!(1.0)),
            (json!(0.5), json!(0.793651), json!(0.206349)),
            (json!(0.0), json!(0.0), json!(1.0)),
        ])
        .map(|(m, (s, g, n))| {
            json!({"month": m, "subscriber_churn_rate": s, "gross_mrr_churn_rate": g, "net_revenue_retention": n})
        })
        .collect();
    assert_eq!(retention["months"], json!(rates));
    assert_eq!(
        retention["cohorts"],
        json!([
            {"cohort": labels[0], "customers": 1, "retained": [1, 1, 1, 0]},
            {"cohort": labels[1], "customers": 1, "retained": [1, 1, 1]},
            {"cohort": labels[2], "customers": 1, "retained": [1, 0]},
            {"cohort": labels[3], "customers": 2, "retained": [2]},
        ])
    );

    let acquisition = get("acquisition").await;
    let expected: Vec<Value> = labels
        .iter()
        .zip([(1, 1, 5000), (1, 1, 2500), (1, 1, 1500), (2, 1, 1933)])
        .map(|(m, (c, s, a))| json!({"month": m, "new_customers": c, "new_subscriptions": s, "arpu": a}))
        .collect();
    assert_eq!(acquisition, json!({"currency": "usd", "months": expected}));

    // EUR: Ada's one payment, no subscriptions.
    let res = app
        .get(
            &format!(
                "/api/businesses/{BIZ}/revenue?from={}&to={}&currency=EUR",
                c.label(1),
                c.label(1)
            ),
            &tok,
        )
        .await;
    assert_eq!(
        res.json(),
        json!({"currency": "eur", "months": [{"month": c.label(1), "gross": 8000, "refunded": 0, "net": 8000, "mrr": 0, "arr": 0, "active_subscriptions": 0}]})
    );
    app.stop().await;
});

db_test!(bad_input_is_answered_clearly, |t| {
    let app = TestApp::spawn(&t).await;
    let tok = token();
    let check = |res: crate::Answer, status: StatusCode, code: &str| {
        assert_eq!(res.status, status, "{}", res.text);
        assert_eq!(res.error_code(), code, "{}", res.text);
        res.json()["error"]["message"].as_str().unwrap().to_owned()
    };
    // Unknown business (outside the claims) → 404 on every route.
    let other = "/api/contacts/stripe-customers?businessId=biz-other";
    check(
        app.get(other, &tok).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    check(
        app.get("/api/businesses/biz-other/revenue", &tok).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    check(
        app.get(
            "/api/contacts/stripe-info?businessId=biz-other&email=a@b.c",
            &tok,
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let post = |path: &'static str, body: Value| {
        let app = &app;
        let tok = tok.clone();
        async move {
            app.send(reqwest::Method::POST, path, Some(&tok), Some(body))
                .await
        }
    };
    check(
        post(
            "/api/contacts/stripe-summary-by-emails",
            json!({"businessId": "biz-other", "emails": []}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Emails: too many, malformed.
    let many: Vec<String> = (0..1001).map(|i| format!("u{i}@example.com")).collect();
    let msg = check(
        post(
            "/api/contacts/stripe-summary-by-emails",
            json!({"businessId": BIZ, "emails": many}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "too_many_emails",
    );
    assert!(msg.contains("1001") && msg.contains("1000"), "{msg}");
    let msg = check(
        post(
            "/api/contacts/stripe-summary-by-emails",
            json!({"businessId": BIZ, "emails": ["ok@example.com", "not-an-email", "two@@x"]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_emails",
    );
    assert!(
        msg.contains("not-an-email") && msg.contains("two@@x") && !msg.contains("ok@"),
        "{msg}"
    );
    check(
        post(
            "/api/contacts/stripe-customers",
            json!({"businessId": BIZ, "contact_emails": ["nope"]}),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_emails",
    );
    let ok = post(
        "/api/contacts/stripe-summary-by-emails",
        json!({"businessId": BIZ, "emails": []}),
    )
    .await;
    assert_eq!(ok.json(), json!({"summaries": {}}));
    check(
        app.get(
            &format!("/api/contacts/stripe-info?businessId={BIZ}&email=nope"),
            &tok,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_email",
    );
    check(
        app.get(&format!("/api/contacts/stripe-info?businessId={BIZ}"), &tok)
            .await,
        StatusCode::BAD_REQUEST,
        "missing_email",
    );

    // Grid parameters.
    for (q, code) in [
        ("sort=amount", "invalid_sort"),
        ("order=up", "invalid_order"),
        ("per_page=0", "invalid_per_page"),
        ("per_page=101", "invalid_per_page"),
        ("page=0", "invalid_page"),
        ("currency=dollars", "invalid_currency"),
        ("page=x", "invalid_query"),
        ("colour=red", "invalid_query"),
    ] {
        check(
            app.get(
                &format!("/api/contacts/stripe-customers?businessId={BIZ}&{q}"),
                &tok,
            )
            .await,
            StatusCode::BAD_REQUEST,
            code,
        );
    }

    // Month ranges.
    let current = Month::of_unix(time::OffsetDateTime::now_utc().unix_timestamp());
    for (q, code) in [
        ("from=2026-13&to=2026-01".to_owned(), "invalid_month"),
        ("from=2026-1&to=2026-02".to_owned(), "invalid_month"),
        ("from=2025-02&to=2025-01".to_owned(), "invalid_range"),
        (
            format!("from={}&to={}", current.add_months(-60), current),
            "invalid_range",
        ),
        (
            format!("from={current}&to={}", current.add_months(1)),
            "invalid_range",
        ),
        (
            "from=2025-01&to=2025-02&currency=usdollar".to_owned(),
            "invalid_currency",
        ),
    ] {
        for what in ["revenue", "retention", "acquisition"] {
            check(
                app.get(&format!("/api/businesses/{BIZ}/{what}?{q}"), &tok)
                    .await,
                StatusCode::BAD_REQUEST,
                code,
            );
        }
    }
    // 60 months is the most one request may ask for.
    let res = app
        .get(
            &format!(
                "/api/businesses/{BIZ}/revenue?from={}&to={current}",
                current.add_months(-59)
            ),
            &tok,
        )
        .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
    assert_eq!(res.json()["months"].as_array().unwrap().len(), 60);
    // No token → 401.
    let res = app
        .send(
            reqwest::Method::GET,
            &format!("/api/businesses/{BIZ}/revenue"),
            None,
            None,
        )
        .await;
    assert_eq!(res.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
});

/// Bulk rows for the query-plan test: 20 businesses, 100k emails, 200k payments and invoices.
const PLAN_SEED: &[&str] = &[
    "INSERT INTO customer_spend (business_id, email, currency, gross, refunded, net, order_count, \
     first_purchase_at, last_purchase_at, customer_ids, name, is_primary, email_order_count, \
     email_last_purchase_at, updated_at) \
     SELECT 'biz-' || lpad((i % 20)::text, 2, '0'), 'user' || i || '@example.com', c.cur, \
     (i * 37) % 100000, 0, (i * 37) % 100000, 1, 1700000000 + i, 1700000000 + i, '[]'::jsonb, \
     'Name ' || i, c.cur = 'usd', 1, 1700000000 + i, 0 \
     FROM generate_series(1, 100000) i CROSS JOIN (VALUES ('usd'), ('eur')) c(cur) \
     WHERE c.cur = 'usd' OR i % 10 = 0",
    "INSERT INTO stripe_customers (business_id, stripe_id, email, name, currency, raw, livemode, \
     created, deleted, last_event_at, synced_at) \
     SELECT 'biz-' || lpad((i % 20)::text, 2, '0'), 'cus_' || i, 'user' || i || '@example.com', \
     'Name ' || i, 'usd', '{}'::jsonb, false, 1700000000 + i, false, 0, 0 \
     FROM generate_series(1, 100000) i",
    "INSERT INTO stripe_orders (business_id, stripe_id, stripe_type, customer, email, status, \
     amount, amount_received, currency, invoice, payment_intent, raw, livemode, created, deleted, \
     last_event_at, synced_at) \
     SELECT 'biz-' || lpad((k % 20)::text, 2, '0'), 'pi_' || i, 'payment_intent', 'cus_' || k, \
     NULL, 'succeeded', 1000, 1000, 'usd', NULL, NULL, '{}'::jsonb, false, 1700000000 + i, false, 0, 0 \
     FROM (SELECT i, (i % 100000) + 1 AS k FROM generate_series(1, 200000) i) s",
    "INSERT INTO stripe_invoices (business_id, stripe_id, customer, email, status, currency, \
     amount_due, amount_paid, amount_remaining, total, subscription, payment_intent, charge, \
     paid_at, number, raw, livemode, created, deleted, last_event_at, synced_at) \
     SELECT 'biz-' || lpad((k % 20)::text, 2, '0'), 'in_' || i, 'cus_' || k, NULL, 'paid', 'usd', \
     1000, 1000, 0, 1000, NULL, CASE WHEN i % 2 = 0 THEN 'pi_' || i END, NULL, 1700000000 + i, \
     NULL, '{}'::jsonb, false, 1700000000 + i, false, 0, 0 \
     FROM (SELECT i, (i % 100000) + 1 AS k FROM generate_series(1, 200000) i) s",
    "INSERT INTO stripe_invoice_payments (business_id, stripe_id, invoice, payment_type, \
     payment_intent, charge, status, amount_paid, amount_requested, currency, paid_at, raw, \
     livemode, created, deleted, last_event_at, synced_at) \
     SELECT 'biz-' || lpad((k % 20)::text, 2, '0'), 'inpay_' || i, 'in_' || i, 'payment_intent', \
     'pi_' || i, NULL, 'paid', 1000, 1000, 'usd', 1700000000 + i, '{}'::jsonb, false, \
     1700000000 + i, false, 0, 0 \
     FROM (SELECT i, (i % 100000) + 1 AS k FROM generate_series(1, 200000) i) s",
    "INSERT INTO stripe_checkout_sessions (business_id, stripe_id, customer, email, mode, status, \
     payment_status, amount_total, amount_subtotal, currency, payment_intent, invoice, \
     subscription, client_reference_id, raw, livemode, created, deleted, last_event_at, synced_at) \
     SELECT 'biz-' || lpad((k % 20)::text, 2, '0'), 'cs_' || i, 'cus_' || k, NULL, 'payment', \
     'complete', 'paid', 1000, 1000, 'usd', 'pi_' || i, NULL, NULL, NULL, '{}'::jsonb, false, \
     1700000000 + i, false, 0, 0 \
     FROM (SELECT i, (i % 100000) + 1 AS k FROM generate_series(1, 100000) i) s",
    "INSERT INTO stripe_refunds (business_id, stripe_id, payment_intent, charge, status, amount, \
     currency, reason, raw, livemode, created, deleted, last_event_at, synced_at) \
     SELECT 'biz-' || lpad((k % 20)::text, 2, '0'), 're_' || i, 'pi_' || i, NULL, 'succeeded', 100, \
     'usd', NULL, '{}'::jsonb, false, 1700000000 + i, false, 0, 0 \
     FROM (SELECT i, (i % 100000) + 1 AS k FROM generate_series(10, 200000, 10) i) s",
    "INSERT INTO stripe_subscriptions (business_id, stripe_id, customer, status, currency, \
     cancel_at_period_end, canceled_at, ended_at, start_date, trial_start, trial_end, \
     current_period_start, current_period_end, mrr, raw, livemode, created, deleted, \
     last_event_at, synced_at) \
     SELECT 'biz-' || lpad((i % 20)::text, 2, '0'), 'sub_' || i, 'cus_' || i, 'active', 'usd', \
     false, NULL, NULL, 1700000000 + i, NULL, NULL, NULL, NULL, 1000, '{}'::jsonb, false, \
     1700000000 + i, false, 0, 0 FROM generate_series(1, 50000) i",
    "INSERT INTO stripe_subscription_items (business_id, stripe_id, subscription, price, product, \
     quantity, unit_amount, currency, recurring_interval, recurring_interval_count, \
     recurring_usage_type, raw, livemode, created, deleted, last_event_at, synced_at) \
     SELECT 'biz-' || lpad((i % 20)::text, 2, '0'), 'si_' || i, 'sub_' || i, NULL, NULL, 1, 1000, \
     'usd', 'month', 1, 'licensed', '{}'::jsonb, false, 1700000000 + i, false, 0, 0 \
     FROM generate_series(1, 50000) i",
    "INSERT INTO mrr_snapshots (business_id, subscription_id, day, customer, status, currency, mrr) \
     SELECT 'biz-' || lpad((i % 20)::text, 2, '0'), 'sub_' || i, '2026-11-' || lpad(d::text, 2, '0'), \
     'cus_' || i, 'active', 'usd', 1000 \
     FROM generate_series(1, 50000) i CROSS JOIN generate_series(1, 5) d",
    "ANALYZE",
];

// The PostgreSQL plans of every contacts read path on a realistic table size: each must use an
// index and none may scan a table. `TRIBUTARY_WRITE_PLANS=path` writes them out for
// `docs/performance.md`.
db_test!(contacts_read_paths_use_indexes, |t| {
    use tributary_persistence::entities::*;
    use tributary_persistence::sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};
    let conn = t.db.conn();
    if conn.get_database_backend() != DbBackend::Postgres {
        return;
    }
    for sql in PLAN_SEED {
        conn.execute_unprepared(sql).await.unwrap();
    }
    let b = BusinessId::parse("biz-07").unwrap();
    let grid = |sort, descending, search: Option<&str>, currency: Option<&str>| reads::SpendQuery {
        page: 3,
        per_page: 50,
        sort,
        descending,
        search: search.map(str::to_owned),
        currency: currency.map(|c| tributary_domain::Currency::parse(c).unwrap()),
    };
    use reads::SpendSort::*;
    let ids = |prefix: &str| -> Vec<String> {
        (0..5).map(|n| format!("{prefix}{}", 7 + 20 * n)).collect()
    };
    let emails: Vec<String> = (0..50)
        .map(|n| format!("user{}@example.com", 7 + 20 * n))
        .collect();
    let email = vec!["user27@example.com".to_owned()];
    // One statement per table and graph round, as `reads::graph` sends it: each list one
    // array bound (`= ANY`), the lists joined by `OR`.
    macro_rules! lookup {
        ($entity:ident, [$(($col:ident, $vals:expr)),+]) => {{
            let mut any = tributary_persistence::sea_orm::Condition::any();
            $(
                let vals: Vec<String> = $vals.clone();
                let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                any = any.add(reads::one_of(DbBackend::Postgres, $entity::Column::$col, &vals));
            )+
            $entity::Entity::find()
                .filter($entity::Column::BusinessId.eq(b.as_str()))
                .filter(any)
                .filter($entity::Column::Deleted.eq(false))
                .build(DbBackend::Postgres)
                .to_string()
        }};
    }
    let queries: Vec<(&str, String)> = vec![
        (
            "grid: count (primary rows)",
            reads::grid_count_select(&b, &grid(TotalSpent, true, None, None))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
        (
            "grid: sort=total_spent (primary net)",
            reads::grid_page_select(&b, &grid(TotalSpent, true, None, None))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
        (
            "grid: sort=total_spent&currency=eur",
            reads::grid_page_select(&b, &grid(TotalSpent, true, None, Some("eur")))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
        (
            "grid: sort=last_purchase",
            reads::grid_page_select(&b, &grid(LastPurchase, true, None, None))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
        (
            "grid: sort=email&order=asc",
            reads::grid_page_select(&b, &grid(Email, false, None, None))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
        (
            "grid: q=user12",
            reads::grid_page_select(&b, &grid(TotalSpent, true, Some("user12"), None))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
        (
            "grid rows of a page / summary-by-emails",
            customer_spend::Entity::find()
                .filter(customer_spend::Column::BusinessId.eq(b.as_str()))
                .filter(reads::one_of(
                    DbBackend::Postgres,
                    customer_spend::Column::Email,
                    &emails.iter().map(String::as_str).collect::<Vec<_>>(),
                ))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
        (
            "stripe-info: customers by email or id",
            lookup!(stripe_customers, [(Email, email), (StripeId, ids("cus_"))]),
        ),
        (
            "stripe-info: payments by email, customer or id (first round)",
            lookup!(
                stripe_orders,
                [
                    (Email, email),
                    (Customer, ids("cus_")),
                    (StripeId, ids("pi_"))
                ]
            ),
        ),
        (
            "stripe-info: payments by id or invoice (link rounds)",
            lookup!(
                stripe_orders,
                [(StripeId, ids("pi_")), (Invoice, ids("in_"))]
            ),
        ),
        (
            "stripe-info: invoices by email, customer or id (first round)",
            lookup!(
                stripe_invoices,
                [
                    (Email, email),
                    (Customer, ids("cus_")),
                    (StripeId, ids("in_"))
                ]
            ),
        ),
        (
            "stripe-info: invoices by id, payment intent or charge (link rounds)",
            lookup!(
                stripe_invoices,
                [
                    (StripeId, ids("in_")),
                    (PaymentIntent, ids("pi_")),
                    (Charge, ids("ch_"))
                ]
            ),
        ),
        (
            "stripe-info: invoice payments by invoice, payment intent or charge",
            lookup!(
                stripe_invoice_payments,
                [
                    (Invoice, ids("in_")),
                    (PaymentIntent, ids("pi_")),
                    (Charge, ids("ch_"))
                ]
            ),
        ),
        (
            "stripe-info: sessions by email, customer or id (first round)",
            lookup!(
                stripe_checkout_sessions,
                [
                    (Email, email),
                    (Customer, ids("cus_")),
                    (StripeId, ids("cs_"))
                ]
            ),
        ),
        (
            "stripe-info: sessions by payment intent or invoice (link rounds)",
            lookup!(
                stripe_checkout_sessions,
                [(PaymentIntent, ids("pi_")), (Invoice, ids("in_"))]
            ),
        ),
        (
            "stripe-info: refunds by payment intent or charge",
            lookup!(
                stripe_refunds,
                [(PaymentIntent, ids("pi_")), (Charge, ids("ch_"))]
            ),
        ),
        (
            "stripe-info: subscriptions by customer",
            lookup!(stripe_subscriptions, [(Customer, ids("cus_"))]),
        ),
        (
            "stripe-info: subscription items",
            lookup!(stripe_subscription_items, [(Subscription, ids("sub_"))]),
        ),
        (
            "dashboards: MRR snapshots of a range",
            mrr_snapshots::Entity::find()
                .filter(mrr_snapshots::Column::BusinessId.eq(b.as_str()))
                .filter(mrr_snapshots::Column::Day.gte("2026-11-02"))
                .filter(mrr_snapshots::Column::Day.lte("2026-11-03"))
                .build(DbBackend::Postgres)
                .to_string(),
        ),
    ];
    let mut out = String::new();
    for (name, sql) in queries {
        let rows = conn
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("EXPLAIN (COSTS OFF) {sql}"),
            ))
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String>("", "QUERY PLAN").unwrap())
            .collect();
        let plan = plan.join("\n");
        assert!(
            !plan.contains("Seq Scan"),
            "{name} scans a table:\n{sql}\n{plan}"
        );
        assert!(
            plan.contains("Index"),
            "{name} uses no index:\n{sql}\n{plan}"
        );
        out.push_str(&format!("-- {name}\n{sql}\n{plan}\n\n"));
    }
    // The walk in one statement, as the lookups pool and a webhook turn plan it: once, for any
    // arrays (a generic plan), with the second level of the spend refresh. Its plan shows the
    // rows read by the ids `tributary_link_graph` returns; the function's own steps are the
    // link-round lookups above, planned inside it.
    let txn = tributary_persistence::sea_orm::TransactionTrait::begin(conn)
        .await
        .unwrap();
    txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    txn.execute_unprepared(&format!(
        "PREPARE walk(text, text[], text[], text[], text[], text[], boolean) AS {}",
        reads::graph_sql()
    ))
    .await
    .unwrap();
    let rows = txn
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "EXPLAIN (COSTS OFF) EXECUTE walk('biz-07', ARRAY['user27@example.com'], \
             ARRAY['cus_27'], ARRAY['pi_26'], ARRAY['in_26'], ARRAY['cs_26'], true)",
        ))
        .await
        .unwrap();
    txn.rollback().await.unwrap();
    let plan: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "QUERY PLAN").unwrap())
        .collect();
    let plan = plan.join("\n");
    assert!(
        !plan.contains("Seq Scan"),
        "the walk scans a table:\n{plan}"
    );
    for table in [
        "stripe_customers",
        "stripe_orders",
        "stripe_invoices",
        "stripe_invoice_payments",
        "stripe_checkout_sessions",
        "stripe_refunds",
    ] {
        assert!(
            plan.contains(&format!("Index Scan using {table}_pkey"))
                || plan.contains(&format!("Bitmap Index Scan on idx_{table}_")),
            "the walk reads {table} through no index:\n{plan}"
        );
    }
    out.push_str(&format!(
        "-- stripe-info and the spend refresh: the link graph in one statement (generic plan)\n{}\n{plan}\n\n",
        reads::graph_sql()
    ));
    if let Ok(path) = std::env::var("TRIBUTARY_WRITE_PLANS") {
        std::fs::write(path, out).unwrap();
    }
});

db_test!(mrr_comes_from_snapshots_since_the_first_sync, |t| {
    use tributary_persistence::entities::mrr_snapshots;
    let (app, c, _ctx) = seeded(&t).await;
    // An earlier sync on the last day of M-1 saw sub_week before its discount (5200), sub_cy,
    // and sub_bob_y already cancelled.
    let day = tributary_domain::metrics::day_of(c.m[2].end() - 1);
    let row = |sub: &str, cus: &str, status: &str, mrr: i64| {
        mrr_snapshots::ActiveModel::from(mrr_snapshots::Model {
            business_id: BIZ.into(),
            subscription_id: sub.into(),
            day: day.clone(),
            customer: Some(cus.into()),
            status: status.into(),
            currency: "usd".into(),
            mrr,
        })
    };
    mrr_snapshots::Entity::insert_many([
        row("sub_week", "cus_ada2", "active", 5200),
        row("sub_cy", "cus_cy", "active", 2500),
        row("sub_bob_y", "cus_bob", "canceled", 0),
    ])
    .exec_without_returning(t.db.conn())
    .await
    .unwrap();
    let range = format!("from={}&to={}&currency=usd", c.label(2), c.label(0));
    let get = |what: &str| {
        let app = &app;
        let path = format!("/api/businesses/{BIZ}/{what}?{range}");
        async move {
            let res = app.get(&path, &token()).await;
            assert_eq!(res.status, StatusCode::OK, "{path}: {}", res.text);
            res.json()
        }
    };
    let revenue = get("revenue").await;
    let mrr: Vec<Value> = revenue["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mrr"].clone())
        .collect();
    // M-2 reconstructed (before the first sync); M-1 and M0 from their snapshots.
    assert_eq!(mrr, [json!(12_600), json!(7_700), json!(5_100)]);
    let retention = get("retention").await;
    let rates: Vec<(Value, Value, Value)> = retention["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["subscriber_churn_rate"].clone(),
                m["gross_mrr_churn_rate"].clone(),
                m["net_revenue_retention"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rates,
        [
            // M-2: start 10000 (Bob), nothing lost.
            (json!(0.0), json!(0.0), json!(1.0)),
            // M-1: start 12600; Bob's 10000 churns, sub_week expands 2600 → 5200:
            // churn 10000 / 12600, NRR (12600 − 10000 + 2600) / 12600.
            (json!(0.5), json!(0.793651), json!(0.412698)),
            // M0: start 7700; sub_week contracts 5200 → 2600: churn 2600 / 7700, NRR 5100 / 7700.
            (json!(0.0), json!(0.337662), json!(0.662338)),
        ]
    );
    app.stop().await;
});

db_test!(kept_spend_rows_follow_every_version_and_nothing_else, |t| {
    let (app, _c, _ctx) = seeded(&t).await;
    let business = BusinessId::parse(BIZ).unwrap();
    let tok = token();
    let summary = || async {
        let a = summaries(&app, &tok, json!(["bob@example.com"])).await;
        a.json()["summaries"]["bob@example.com"]["totals"][0]["net"].clone()
    };
    let grid_net = || async {
        let a = app
            .get(
                &format!("/api/contacts/stripe-customers?businessId={BIZ}&sort=email&order=asc"),
                &tok,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let v = a.json();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["email"] == "bob@example.com")
            .map(|i| i["totals"][0]["net"].clone())
            .unwrap()
    };
    let net = summary().await;
    assert!(net.as_i64().unwrap() > 1, "{net}");
    assert_eq!(grid_net().await, net);
    // The first read loads the business's rows in the background; give it time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let set_net = |value: i64, bump: bool| {
        let db = t.db.clone();
        let business = business.clone();
        async move {
            let txn = db.begin_write().await.unwrap();
            customer_spend::Entity::update_many()
                .col_expr(customer_spend::Column::Net, Expr::value(value))
                .filter(customer_spend::Column::BusinessId.eq(BIZ))
                .filter(customer_spend::Column::Email.eq("bob@example.com"))
                .exec(&txn)
                .await
                .unwrap();
            if bump {
                access::bump_version(&txn, &business).await.unwrap();
            }
            txn.commit().await.unwrap();
        }
    };
    // A change no writer of Tributary makes (it bypasses the version) is not seen: the reads
    // are answered from the kept rows.
    set_net(1, false).await;
    assert_eq!(summary().await, net);
    assert_eq!(grid_net().await, net);
    // Every real write bumps the version: the very next read sees it, from the database,
    // and the reads after it from rows loaded again.
    set_net(2, true).await;
    assert_eq!(summary().await, json!(2));
    assert_eq!(grid_net().await, json!(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(summary().await, json!(2));
    assert_eq!(grid_net().await, json!(2));
    set_net(3, false).await;
    assert_eq!(
        summary().await,
        json!(2),
        "served from the rows loaded again"
    );
    set_net(4, true).await;
    assert_eq!(summary().await, json!(4));
    app.stop().await;
});

db_test!(
    summaries_from_kept_rows_are_the_databases_to_the_byte,
    |t| {
        let (app, _c, _ctx) = seeded(&t).await;
        let tok = token();
        // From the table, not the grid: the first read of the API must be the summaries (any
        // read of the business's spend starts loading the rows it keeps).
        let business = BusinessId::parse(BIZ).unwrap();
        let mut emails: Vec<String> = reads::all_spend(t.db.conn(), &business)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.email)
            .collect();
        emails.dedup();
        assert!(emails.len() > 3, "{emails:?}");
        // Out of order, one twice in another case, one without spend.
        emails.reverse();
        emails.push(emails[0].to_uppercase());
        emails.push("nobody@example.com".into());
        let answer = || async { summaries(&app, &tok, json!(emails)).await.text };
        // The first read is the database's (and starts the load of the business's rows).
        let from_db = answer().await;
        let v: Value = serde_json::from_str(&from_db).unwrap();
        assert_eq!(v["summaries"].as_object().unwrap().len(), emails.len() - 2);
        // Each email once, in order, in the text itself.
        let mut distinct = emails[..emails.len() - 2].to_vec();
        distinct.sort();
        let at: Vec<usize> = distinct
            .iter()
            .map(|e| from_db.find(&format!("\"{e}\":")).expect(e))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{from_db}");
        for e in &distinct {
            assert_eq!(from_db.matches(&format!("\"{e}\":")).count(), 1, "{e}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(answer().await, from_db);
        // A change that bypasses the version is not seen: the answer above came from kept rows.
        let txn = t.db.begin_write().await.unwrap();
        customer_spend::Entity::update_many()
            .col_expr(customer_spend::Column::Net, Expr::value(-7))
            .filter(customer_spend::Column::BusinessId.eq(BIZ))
            .exec(&txn)
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert_eq!(answer().await, from_db, "answered from the kept rows");
        app.stop().await;
    }
);
