//! Lenient event envelopes: any event type, any API version's object shape.

use serde_json::Value;

use crate::list::FromRaw;

/// The parts of a Stripe event the sync needs. `object` stays JSON: an event keeps the API
/// version of the moment it was created (and a business's own endpoint may use any version),
/// so its shape need not match the pinned models (e.g. `invoice.payment_intent` of old versions).
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    /// `evt_…`
    pub id: String,
    /// `type`, e.g. `customer.subscription.updated`; unknown types are kept as they are.
    pub event_type: String,
    /// `account` (`acct_…`) on events delivered to a Connect endpoint.
    pub account: Option<String>,
    /// `created` (unix seconds); 0 when absent.
    pub created: i64,
    /// `livemode`; false when absent.
    pub livemode: bool,
    /// `api_version` the payload was rendered with.
    pub api_version: Option<String>,
    /// `data.object`.
    pub object: Value,
    /// `data.previous_attributes` on `*.updated` events.
    pub previous_attributes: Option<Value>,
}

/// Why a body is not an event at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventParseError {
    /// Not JSON.
    #[error("event body is not JSON: {0}")]
    Json(String),
    /// A required part (`id`, `type`, `data.object`) is missing.
    #[error("event has no {0}")]
    Missing(&'static str),
    /// `id`, `type` or `account` holds a control character: Stripe never sends one, and
    /// these are written to the logs as they are.
    #[error("event {0} holds a control character")]
    ControlCharacter(&'static str),
}

/// Replaces every NUL character in the strings and keys of `v` with U+FFFD.
///
/// JSON may carry `\u0000`, and a signed event or an API answer may hold one, but PostgreSQL
/// stores NUL neither in `text` nor in `jsonb`: one such string would make every write of its
/// page or event fail, for ever. Everything read from Stripe passes through here first.
pub fn scrub_nul(v: &mut Value) {
    match v {
        Value::String(s) if s.contains('\0') => *s = s.replace('\0', "\u{FFFD}"),
        Value::Array(a) => a.iter_mut().for_each(scrub_nul),
        Value::Object(o) => {
            if o.keys().any(|k| k.contains('\0')) {
                *o = std::mem::take(o)
                    .into_iter()
                    .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), v))
                    .collect();
            }
            o.values_mut().for_each(scrub_nul);
        }
        _ => {}
    }
}

/// Whether a JSON body may hold a NUL character: JSON carries one, in a string or a key, only
/// escaped as `\u0000`, so a body without that text holds none and its parsed value needs no
/// walk by [`scrub_nul`] (the walk was about 5 % of a first sync's own CPU).
pub(crate) fn may_hold_nul(body: &[u8]) -> bool {
    memchr::memmem::find(body, br"\u0000").is_some()
}

impl EventEnvelope {
    /// Read an envelope from parsed JSON (NUL characters replaced, see [`scrub_nul`]).
    pub fn from_value(v: &Value) -> Result<Self, EventParseError> {
        Self::from_owned(v.clone(), true)
    }

    /// Read an envelope, taking its parts out of `v`; scrubbed of NUL characters first unless
    /// `may_hold_nul` says there are none.
    fn from_owned(mut v: Value, may_hold_nul: bool) -> Result<Self, EventParseError> {
        if may_hold_nul {
            scrub_nul(&mut v);
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let id = s("id").ok_or(EventParseError::Missing("id"))?;
        let event_type = s("type").ok_or(EventParseError::Missing("type"))?;
        for (what, value) in [
            ("id", Some(&id)),
            ("type", Some(&event_type)),
            ("account", s("account").as_ref()),
        ] {
            if value.is_some_and(|v| v.chars().any(char::is_control)) {
                return Err(EventParseError::ControlCharacter(what));
            }
        }
        let account = s("account");
        let api_version = s("api_version");
        let created = v.get("created").and_then(Value::as_i64).unwrap_or(0);
        let livemode = v.get("livemode").and_then(Value::as_bool).unwrap_or(false);
        let data = v.get_mut("data").ok_or(EventParseError::Missing("data"))?;
        let object = data
            .get_mut("object")
            .map(Value::take)
            .ok_or(EventParseError::Missing("data.object"))?;
        let previous_attributes = data
            .get_mut("previous_attributes")
            .map(Value::take)
            .filter(|p| !p.is_null());
        Ok(EventEnvelope {
            id,
            event_type,
            account,
            created,
            livemode,
            api_version,
            object,
            previous_attributes,
        })
    }

    /// `data.object.object`, e.g. `invoice`, `checkout.session`.
    pub fn object_type(&self) -> Option<&str> {
        self.object.get("object").and_then(Value::as_str)
    }

    /// `data.object.id`.
    pub fn object_id(&self) -> Option<&str> {
        self.object.get("id").and_then(Value::as_str)
    }
}

impl FromRaw for EventEnvelope {
    fn from_raw(raw: &Value) -> Result<Self, String> {
        EventEnvelope::from_value(raw).map_err(|e| e.to_string())
    }
}

/// Parse a (verified) webhook body into an envelope.
pub fn parse_event(body: &[u8]) -> Result<EventEnvelope, EventParseError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| EventParseError::Json(e.to_string()))?;
    EventEnvelope::from_owned(v, may_hold_nul(body))
}

/// The API path to re-fetch an object of type `object` (as in its `object` field), for the
/// resources the sync mirrors. `None` for types it does not.
pub fn retrieve_path(object: &str, id: &str) -> Option<String> {
    let base = match object {
        "product" => "/v1/products",
        "price" => "/v1/prices",
        "customer" => "/v1/customers",
        "payment_intent" => "/v1/payment_intents",
        "charge" => "/v1/charges",
        "refund" => "/v1/refunds",
        "invoice" => "/v1/invoices",
        "invoice_payment" => "/v1/invoice_payments",
        "checkout.session" => "/v1/checkout/sessions",
        "subscription" => "/v1/subscriptions",
        "subscription_item" => "/v1/subscription_items",
        "event" => "/v1/events",
        _ => return None,
    };
    Some(format!("{base}/{}", crate::list::path_segment(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_version_invoice_event_parses() {
        let body = br#"{
          "id": "evt_1", "object": "event", "type": "invoice.paid", "account": "acct_9",
          "api_version": "2020-08-27", "created": 1700000000, "livemode": false,
          "data": {"object": {"id": "in_1", "object": "invoice", "payment_intent": "pi_1",
                              "charge": "ch_1", "subscription": "sub_1", "amount_paid": 500},
                   "previous_attributes": {"status": "open"}},
          "pending_webhooks": 1, "request": {"id": null}
        }"#;
        let e = parse_event(body).expect("event");
        assert_eq!(e.id, "evt_1");
        assert_eq!(e.event_type, "invoice.paid");
        assert_eq!(e.account.as_deref(), Some("acct_9"));
        assert_eq!(e.created, 1_700_000_000);
        assert_eq!(e.api_version.as_deref(), Some("2020-08-27"));
        assert_eq!(e.object["payment_intent"], "pi_1");
        assert_eq!(e.object_type(), Some("invoice"));
        assert_eq!(e.object_id(), Some("in_1"));
        assert_eq!(
            e.previous_attributes.as_ref().map(|p| p["status"].clone()),
            Some("open".into())
        );
    }

    #[test]
    fn unknown_type_and_minimal_shape() {
        let e =
            parse_event(br#"{"id":"evt_2","type":"brand_new.thing","data":{"object":{"x":1}}}"#)
                .expect("event");
        assert_eq!(e.event_type, "brand_new.thing");
        assert_eq!(e.account, None);
        assert!(!e.livemode);
        assert_eq!(e.object_type(), None);
        assert_eq!(e.previous_attributes, None);
    }

    #[test]
    fn not_events() {
        assert!(matches!(
            parse_event(b"nope"),
            Err(EventParseError::Json(_))
        ));
        assert_eq!(
            parse_event(br#"{"type":"x","data":{"object":{}}}"#),
            Err(EventParseError::Missing("id"))
        );
        assert_eq!(
            parse_event(br#"{"id":"evt","type":"x","data":{}}"#),
            Err(EventParseError::Missing("data.object"))
        );
    }

    #[test]
    fn nul_characters_are_replaced() {
        let e = parse_event(
            br#"{"id":"evt_\u0000","type":"customer.updated","account":"acct_\u0000x",
                 "data":{"object":{"id":"cus_1","name":"a\u0000b","metadata":{"k\u0000":["\u0000"]},
                                   "escaped":"\\u0000"}}}"#,
        )
        .expect("event");
        assert_eq!(e.id, "evt_\u{FFFD}");
        assert_eq!(e.account.as_deref(), Some("acct_\u{FFFD}x"));
        assert_eq!(e.object["name"], "a\u{FFFD}b");
        assert_eq!(e.object["metadata"]["k\u{FFFD}"][0], "\u{FFFD}");
        assert_eq!(
            e.object["escaped"], "\\u0000",
            "an escaped backslash is not a NUL"
        );
    }

    #[test]
    fn control_characters_in_what_is_logged_are_refused() {
        for (body, what) in [
            (
                &br#"{"id":"evt_1\n2026-01-01 ERROR forged","type":"x","data":{"object":{}}}"#[..],
                "id",
            ),
            (
                br#"{"id":"evt_1","type":"x\r","data":{"object":{}}}"#,
                "type",
            ),
            (
                br#"{"id":"evt_1","type":"x","account":"acct_\u001b[31m","data":{"object":{}}}"#,
                "account",
            ),
        ] {
            assert_eq!(
                parse_event(body),
                Err(EventParseError::ControlCharacter(what))
            );
        }
    }

    #[test]
    fn retrieve_paths() {
        assert_eq!(
            retrieve_path("checkout.session", "cs_1").as_deref(),
            Some("/v1/checkout/sessions/cs_1")
        );
        assert_eq!(
            retrieve_path("invoice_payment", "inpay_1").as_deref(),
            Some("/v1/invoice_payments/inpay_1")
        );
        assert_eq!(retrieve_path("balance", "x"), None);
    }
}
