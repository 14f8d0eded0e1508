use serde_json::json;

use super::*;

fn st() -> Stamp<'static> {
    Stamp {
        business_id: "b1",
        at: 100,
        now: 200,
    }
}

fn fixture(name: &str) -> Option<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/stripe-fixtures/fixtures3.json"
    );
    let text = std::fs::read_to_string(path).ok()?;
    let all: Value = serde_json::from_str(&text).ok()?;
    all.get("resources")?.get(name).cloned()
}

#[test]
fn every_fixture_maps_without_losing_the_raw_object() {
    let Some(customer) = fixture("customer") else {
        tributary_persistence::testing::notice(
            "NOTICE: stripe fixtures not found; fixture mapping test skipped",
        );
        return;
    };
    assert_eq!(super::customer(st(), &customer).raw, customer);
    for name in [
        "product",
        "price",
        "payment_intent",
        "charge",
        "refund",
        "invoice",
        "invoice_payment",
        "checkout.session",
        "subscription",
    ] {
        let raw = fixture(name).unwrap_or_else(|| panic!("fixture {name}"));
        let id = raw["id"].as_str().unwrap().to_owned();
        let (got_id, got_raw) = match name {
            "product" => {
                let m = product(st(), &raw);
                (m.stripe_id, m.raw)
            }
            "price" => {
                let m = price(st(), &raw);
                (m.stripe_id, m.raw)
            }
            "payment_intent" => {
                let m = payment_intent(st(), &raw);
                (m.stripe_id, m.raw)
            }
            "charge" => match super::charge(st(), &raw) {
                Some(m) => (m.stripe_id, m.raw),
                None => (id.clone(), raw.clone()),
            },
            "refund" => {
                let m = refund(st(), &raw);
                (m.stripe_id, m.raw)
            }
            "invoice" => {
                let m = invoice(st(), &raw);
                (m.stripe_id, m.raw)
            }
            "invoice_payment" => {
                let m = invoice_payment(st(), &raw);
                (m.stripe_id, m.raw)
            }
            "checkout.session" => {
                let m = checkout_session(st(), &raw);
                (m.stripe_id, raw.clone())
            }
            "subscription" => {
                let m = subscription(st(), &raw);
                (m.stripe_id, m.raw)
            }
            _ => unreachable!(),
        };
        assert_eq!(got_id, id, "{name}");
        assert_eq!(got_raw, raw, "{name}");
    }
}

#[test]
fn rows_from_read_fields_equal_rows_from_the_whole_object() {
    let Some(charge) = fixture("charge") else {
        tributary_persistence::testing::notice(
            "NOTICE: stripe fixtures not found; field-reading test skipped",
        );
        return;
    };
    // The fixtures, and shapes of other API versions and expanded links.
    let mut objects: Vec<Value> = [
        "product",
        "price",
        "customer",
        "payment_intent",
        "refund",
        "invoice_payment",
    ]
    .iter()
    .map(|name| fixture(name).unwrap_or_else(|| panic!("fixture {name}")))
    .collect();
    let mut standalone = charge.clone();
    standalone["payment_intent"] = Value::Null;
    standalone["receipt_email"] = Value::Null;
    standalone["billing_details"]["email"] = json!("Billing@Example.com");
    // Not every field is parsed: a charge's are a few of its many.
    let text = serde_json::value::to_raw_value(&charge).unwrap();
    let read = fields_of("charge").unwrap().read(&text).unwrap();
    assert!(read.0.as_object().unwrap().len() * 2 < charge.as_object().unwrap().len());
    objects.extend([charge, standalone]);
    objects.push(json!({"id": "pi_x", "object": "payment_intent", "customer": {"id": "cus_x", "object": "customer"},
        "invoice": {"id": "in_x"}, "receipt_email": "A@B.co", "status": "succeeded", "amount": 5,
        "amount_received": 5, "currency": "EUR", "created": 9, "livemode": true, "metadata": {"k": "v"}}));
    objects.push(
        json!({"id": "inpay_x", "object": "invoice_payment", "invoice": "in_x",
        "payment": {"type": "charge", "charge": {"id": "ch_x"}}, "status": "paid", "amount_paid": 7,
        "amount_requested": 7, "currency": "usd", "status_transitions": {"paid_at": 11}}),
    );
    objects.push(json!({"id": "cus_d", "object": "customer", "deleted": true}));
    // The row from the fields leaves `raw` null (it is written from the text); all else equal.
    macro_rules! eq_but_raw {
        ($whole:expr, $fields:expr $(,)?) => {{
            let mut want = $whole;
            assert!(want.raw.is_object());
            want.raw = Value::Null;
            assert_eq!(want, $fields);
        }};
    }
    for whole in objects {
        let kind = whole["object"].as_str().unwrap().to_owned();
        let of = fields_of(&kind).unwrap_or_else(|| panic!("{kind} is read from fields"));
        let text = serde_json::value::to_raw_value(&whole).unwrap();
        let fields = of.read(&text).unwrap();
        // The fields are the object's own, as they are in it.
        for (key, value) in fields.0.as_object().unwrap() {
            assert_eq!(Some(value), whole.get(key), "{kind}: {key}");
        }
        match kind.as_str() {
            "product" => eq_but_raw!(product(st(), &whole), product(st(), fields.clone())),
            "price" => eq_but_raw!(price(st(), &whole), price(st(), fields.clone())),
            "customer" => eq_but_raw!(customer(st(), &whole), customer(st(), fields.clone())),
            "payment_intent" => eq_but_raw!(
                payment_intent(st(), &whole),
                payment_intent(st(), fields.clone()),
            ),
            "charge" => match (
                super::charge(st(), &whole),
                super::charge(st(), fields.clone()),
            ) {
                (Some(w), Some(g)) => eq_but_raw!(w, g),
                (None, None) => {}
                (w, g) => panic!("charge: {w:?} / {g:?}"),
            },
            "refund" => eq_but_raw!(refund(st(), &whole), refund(st(), fields.clone())),
            "invoice_payment" => eq_but_raw!(
                invoice_payment(st(), &whole),
                invoice_payment(st(), fields.clone()),
            ),
            other => panic!("{other}"),
        }
        let (mut a, mut b) = Default::default();
        crate::readmodel::touch(&mut a, &whole);
        crate::readmodel::touch(&mut b, &fields.0);
        assert_eq!(a, b, "{kind}: touched");
    }
    // Kinds whose rows need the whole tree are not read from fields; a malformed text fails.
    for kind in ["invoice", "checkout.session", "subscription"] {
        assert!(fields_of(kind).is_none(), "{kind}");
    }
    let of = fields_of("customer").unwrap();
    let bad = serde_json::value::RawValue::from_string("[1, 2]".into()).unwrap();
    assert!(of.read(&bad).is_err());
}

#[test]
fn links_read_both_current_and_older_shapes() {
    let current = json!({"id": "in_1", "object": "invoice", "status": "paid", "currency": "USD", "amount_paid": 500,
        "customer": {"id": "cus_1", "object": "customer"}, "customer_email": " Ada@Example.com",
        "parent": {"subscription_details": {"subscription": "sub_1"}},
        "status_transitions": {"paid_at": 1700}, "created": 1600});
    let row = invoice(st(), &current);
    assert_eq!(
        (
            row.customer.as_deref(),
            row.subscription.as_deref(),
            row.paid_at
        ),
        (Some("cus_1"), Some("sub_1"), Some(1700))
    );
    assert_eq!(
        (row.email.as_deref(), row.currency.as_str()),
        (Some("ada@example.com"), "usd")
    );
    assert_eq!((row.last_event_at, row.synced_at), (100, 200));
    let older = json!({"id": "in_2", "object": "invoice", "subscription": "sub_9", "payment_intent": "pi_9", "charge": "ch_9"});
    let row = invoice(st(), &older);
    assert_eq!(
        (
            row.subscription.as_deref(),
            row.payment_intent.as_deref(),
            row.charge.as_deref()
        ),
        (Some("sub_9"), Some("pi_9"), Some("ch_9"))
    );
}

#[test]
fn charges_with_a_payment_intent_are_not_orders() {
    assert!(charge(st(), json!({"id": "ch_1", "payment_intent": "pi_1"})).is_none());
    let row = charge(st(), json!({"id": "ch_2", "payment_intent": null, "status": "succeeded", "paid": true,
        "amount": 900, "amount_captured": 700, "currency": "eur", "billing_details": {"email": "X@y.io"}})).unwrap();
    assert_eq!(
        (
            row.stripe_type.as_str(),
            row.amount_received,
            row.email.as_deref()
        ),
        ("charge", 700, Some("x@y.io"))
    );
}

#[test]
fn subscription_mrr_normalises_items_and_discounts() {
    let sub = json!({"id": "sub_1", "object": "subscription", "status": "active", "currency": "usd",
        "items": {"data": [
            {"id": "si_1", "quantity": 2, "price": {"id": "price_1", "unit_amount": 1200, "currency": "usd", "product": "prod_1",
                "recurring": {"interval": "year", "interval_count": 1, "usage_type": "licensed"}}},
            {"id": "si_2", "quantity": 1, "price": {"id": "price_2", "unit_amount": 50, "currency": "usd",
                "recurring": {"interval": "month", "interval_count": 1, "usage_type": "metered"}}}
        ]},
        "discounts": [{"id": "di_1", "coupon": {"percent_off": 50.0}}]});
    // 2 × 1200 / 12 = 200, metered excluded, half off → 100
    assert_eq!(subscription_mrr(&sub), 100);
    let row = subscription(st(), &sub);
    assert_eq!(row.mrr, 100);
    let items = subscription_items(st(), &sub);
    assert_eq!(items.len(), 2);
    assert_eq!(
        (
            items[0].subscription.as_str(),
            items[0].product.as_deref(),
            items[0].quantity
        ),
        ("sub_1", Some("prod_1"), 2)
    );
    let trialing = json!({"status": "trialing", "currency": "usd", "items": sub["items"].clone()});
    assert_eq!(subscription_mrr(&trialing), 0);
}
