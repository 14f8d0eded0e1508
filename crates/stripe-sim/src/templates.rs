//! Object templates derived from Stripe's fixtures (see `tools/make_templates.py`): every key a
//! real object carries is present; the generator overwrites the ones that matter.

use std::sync::OnceLock;

use serde_json::Value;

macro_rules! template {
    ($name:ident, $file:literal) => {
        pub fn $name() -> Value {
            static T: OnceLock<Value> = OnceLock::new();
            T.get_or_init(|| {
                serde_json::from_str(include_str!(concat!("templates/", $file)))
                    .expect("embedded template is valid JSON")
            })
            .clone()
        }
    };
}

template!(account, "account.json");
template!(customer, "customer.json");
template!(product, "product.json");
template!(price, "price.json");
template!(plan, "plan.json");
template!(payment_intent, "payment_intent.json");
template!(charge, "charge.json");
template!(refund, "refund.json");
template!(invoice, "invoice.json");
template!(line_item, "line_item.json");
template!(invoice_payment, "invoice_payment.json");
template!(checkout_session, "checkout_session.json");
template!(item, "item.json");
template!(subscription, "subscription.json");
template!(subscription_item, "subscription_item.json");
template!(discount, "discount.json");

/// Sets top-level keys of an object.
pub fn set(v: &mut Value, pairs: Vec<(&str, Value)>) {
    if let Some(m) = v.as_object_mut() {
        for (k, x) in pairs {
            m.insert(k.to_string(), x);
        }
    }
}

/// Sets a nested key, creating objects on the way.
pub fn set_path(v: &mut Value, path: &[&str], x: Value) {
    let mut cur = v;
    for seg in &path[..path.len() - 1] {
        if !cur.get(*seg).is_some_and(Value::is_object) {
            cur[*seg] = Value::Object(serde_json::Map::new());
        }
        cur = &mut cur[*seg];
    }
    cur[path[path.len() - 1]] = x;
}
