//! Hostile input to what faces the network without a bearer token: the `Stripe-Signature`
//! parser and the event envelope (property tests), and outbound calls to a Stripe that never
//! answers (a short per-attempt timeout ends them).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tributary_stripe_connect::{
    DEFAULT_TOLERANCE, SignatureError, Stripe, StripeConfig, StripeError, WebhookError,
    compute_signature, construct_event, parse_event, sign_payload, verify_signature,
};

const NOW: i64 = 1_763_900_000;

fn at(t: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t).unwrap()
}

fn verify(payload: &[u8], header: &str, secrets: &[&str], now: i64) -> Result<(), SignatureError> {
    verify_signature(payload, header, secrets, DEFAULT_TOLERANCE, at(now))
}

/// A webhook signing secret as Stripe issues them, or as an operator might paste one.
fn secret() -> impl Strategy<Value = String> {
    "whsec_[A-Za-z0-9]{1,40}"
}

/// One element of a `Stripe-Signature` header that is not a valid `v1` for anything.
fn noise_element() -> impl Strategy<Value = String> {
    prop_oneof![
        "v0=[0-9a-f]{0,64}",
        "v1=[0-9a-f]{0,62}",
        "v1=[g-z]{64}",
        "[a-su-z0-9]{1,4}=[ -+\\--~]{0,20}".prop_filter("not v1", |e| !e.starts_with("v1=")),
        "v1= [0-9a-f]{64} ",
    ]
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("type".to_owned()),
                    Just("data".to_owned()),
                    Just("object".to_owned()),
                    "[a-z_]{1,8}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event(id: &str, kind: &str, object: Value) -> Value {
    json!({
        "id": id, "object": "event", "type": kind, "api_version": "2019-12-03",
        "created": NOW, "livemode": false, "account": "acct_1",
        "data": {"object": object, "previous_attributes": {"email": null}},
        "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null}
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the header says, the parser answers, and only a header carrying the MAC of
    /// exactly this body and timestamp verifies.
    #[test]
    fn any_header_is_answered_and_only_the_right_mac_verifies(
        header in ".{0,200}",
        payload in prop::collection::vec(any::<u8>(), 0..200),
        secret in secret(),
    ) {
        let result = verify(&payload, &header, &[secret.as_str()], NOW);
        if result.is_ok() {
            let t = header.split(',').find_map(|p| p.trim().strip_prefix("t=")).unwrap();
            let mac = compute_signature(&payload, &secret, t.trim().parse().unwrap());
            prop_assert!(header.to_ascii_lowercase().contains(&mac), "{header}");
        }
    }

    /// Signed by us, verified by us: for any body, secret and timestamp within tolerance, in
    /// any order among elements that match nothing.
    #[test]
    fn signed_headers_verify_among_any_noise(
        payload in prop::collection::vec(any::<u8>(), 0..300),
        secret in secret(),
        skew in -300i64..=300,
        noise in prop::collection::vec(noise_element(), 0..6),
        position in any::<prop::sample::Index>(),
    ) {
        let t = NOW + skew;
        let mac = compute_signature(&payload, &secret, t);
        let mut elements = noise;
        let at_index = position.index(elements.len() + 1);
        elements.insert(at_index, format!("v1={mac}"));
        elements.insert(0, format!("t={t}"));
        let header = elements.join(",");
        prop_assert_eq!(verify(&payload, &header, &[secret.as_str()], NOW), Ok(()));
        // Any other secret, even one differing by a character, does not.
        let other = format!("{secret}x");
        prop_assert_eq!(
            verify(&payload, &header, &[other.as_str()], NOW),
            Err(SignatureError::NoMatch)
        );
        // Rotation: holding the right secret among others is enough.
        prop_assert_eq!(verify(&payload, &header, &[other.as_str(), secret.as_str()], NOW), Ok(()));
    }

    /// Flipping any bit of the body breaks the signature.
    #[test]
    fn any_changed_byte_of_the_body_is_refused(
        payload in prop::collection::vec(any::<u8>(), 1..300),
        secret in secret(),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let header = sign_payload(&payload, &secret, NOW);
        let mut tampered = payload.clone();
        let i = index.index(tampered.len());
        tampered[i] ^= 1 << bit;
        prop_assert_eq!(
            verify(&tampered, &header, &[secret.as_str()], NOW),
            Err(SignatureError::NoMatch)
        );
        // Cut short or extended by a byte, too.
        prop_assert!(verify(&payload[..payload.len() - 1], &header, &[secret.as_str()], NOW).is_err());
        let mut longer = payload.clone();
        longer.push(b' ');
        prop_assert!(verify(&longer, &header, &[secret.as_str()], NOW).is_err());
    }

    /// Editing the header by one character either keeps the same `t` and `v1` (whitespace,
    /// a harmless element) or fails to verify; it never panics.
    #[test]
    fn one_character_edits_of_a_good_header(
        payload in prop::collection::vec(any::<u8>(), 0..100),
        secret in secret(),
        index in any::<prop::sample::Index>(),
        edit in 0u8..3,
        ch in prop::char::range(' ', '~'),
    ) {
        let header = sign_payload(&payload, &secret, NOW);
        let mut chars: Vec<char> = header.chars().collect();
        let i = index.index(chars.len());
        match edit {
            0 => { chars.remove(i); }
            1 => chars.insert(i, ch),
            _ => chars[i] = ch,
        }
        let edited: String = chars.into_iter().collect();
        if verify(&payload, &edited, &[secret.as_str()], NOW).is_ok() {
            // Hex is read in either case, and `t` as the number it writes (`+`, whitespace).
            let mac = compute_signature(&payload, &secret, NOW);
            prop_assert!(edited.to_ascii_lowercase().contains(&mac), "{edited}");
            // Read `t` as the parser does: keys and values are trimmed (`t =`, `t= `).
            let t = edited
                .split(',')
                .filter_map(|p| p.split_once('='))
                .find_map(|(k, v)| (k.trim() == "t").then_some(v))
                .unwrap();
            prop_assert_eq!(t.trim().parse::<i64>(), Ok(NOW), "{}", edited);
        }
    }

    /// Outside the 300 s tolerance, before or after, nothing verifies; any `t`, however large.
    #[test]
    fn timestamps_outside_the_tolerance_are_refused(
        t in prop_oneof![any::<i64>(), (NOW - 10_000)..(NOW + 10_000)],
        payload in prop::collection::vec(any::<u8>(), 0..50),
        secret in secret(),
    ) {
        let header = format!("t={t},v1={}", compute_signature(&payload, &secret, t));
        let result = verify(&payload, &header, &[secret.as_str()], NOW);
        if NOW.abs_diff(t) > 300 {
            prop_assert_eq!(
                result,
                Err(SignatureError::TimestampOutOfTolerance { timestamp: t, tolerance_secs: 300 })
            );
        } else {
            prop_assert_eq!(result, Ok(()));
        }
    }

    /// Any body, signed: either an envelope with an id, a type and `data.object`, or a
    /// clear [`WebhookError::Event`]; never a panic.
    #[test]
    fn any_signed_body_is_an_event_or_a_clear_error(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..200),
            any_json().prop_map(|v| v.to_string().into_bytes()),
        ],
        secret in secret(),
    ) {
        let header = sign_payload(&body, &secret, NOW);
        match construct_event(&body, &header, &[secret.as_str()], DEFAULT_TOLERANCE, at(NOW)) {
            Ok(e) => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                prop_assert_eq!(Some(e.id.as_str()), v["id"].as_str());
                prop_assert_eq!(Some(e.event_type.as_str()), v["type"].as_str());
                prop_assert_eq!(&e.object, &v["data"]["object"]);
            }
            Err(WebhookError::Event(_)) => {}
            Err(other) => prop_assert!(false, "signed body refused as {other:?}"),
        }
    }

    /// Events of any type with any field of the envelope replaced by any JSON: parsed
    /// leniently (defaults for optional fields) or refused, never a panic.
    #[test]
    fn mutated_envelopes_parse_leniently(
        kind in prop_oneof![
            Just("customer.updated"), Just("invoice.paid"), Just("charge.refunded"),
            Just("account.application.deauthorized"), Just("brand_new.event"),
        ],
        field in prop_oneof![
            Just("id"), Just("type"), Just("created"), Just("livemode"), Just("account"),
            Just("api_version"), Just("data"),
        ],
        replacement in any_json(),
    ) {
        let mut e = event("evt_1", kind, json!({"id": "cus_1", "object": "customer"}));
        e[field] = replacement.clone();
        match parse_event(e.to_string().as_bytes()) {
            Ok(parsed) => {
                prop_assert!(!matches!(field, "id" | "type") || replacement.is_string());
                if field == "created" {
                    prop_assert_eq!(parsed.created, replacement.as_i64().unwrap_or(0));
                }
                if field == "account" {
                    // NUL characters are replaced on the way in (PostgreSQL refuses them).
                    let expected = replacement.as_str().map(|s| s.replace('\0', "\u{FFFD}"));
                    prop_assert_eq!(parsed.account, expected);
                }
            }
            // An id, type or account holding a control character is refused (log forging).
            Err(_) => prop_assert!(
                matches!(field, "id" | "type" | "data")
                    || (field == "account"
                        && replacement.as_str().is_some_and(|s| s.chars().any(|c| c.is_control() && c != '\0')))
            ),
        }
    }
}

/// Regression: every `v1` used to re-hash the whole body, so one header listing thousands of
/// (bogus) signatures made an unauthenticated request hash a 1 MiB body thousands of times.
/// Values that cannot be a SHA-256 MAC are now skipped, and the body is hashed once per secret.
#[test]
fn a_header_of_thousands_of_signatures_is_refused() {
    let payload = vec![b'x'; 1024 * 1024];
    let secret = "whsec_amplification";
    let short: String = (0..20_000).map(|_| ",v1=").collect();
    assert_eq!(
        verify(&payload, &format!("t={NOW}{short}"), &[secret], NOW),
        Err(SignatureError::NoV1Signature),
        "empty and short v1 values are not signatures"
    );
    let bogus: String = (0..2_000u32)
        .map(|i| format!(",v1={:064x}", u128::from(i)))
        .collect();
    let good = compute_signature(&payload, secret, NOW);
    assert_eq!(
        verify(&payload, &format!("t={NOW}{bogus}"), &[secret], NOW),
        Err(SignatureError::NoMatch)
    );
    assert_eq!(
        verify(
            &payload,
            &format!("t={NOW}{bogus},v1={good}"),
            &[secret],
            NOW
        ),
        Ok(()),
        "the real one is still found after 2,000 others"
    );
}

// ---------------------------------------------------------------- a Stripe that never answers

/// A TCP server that accepts connections and reads requests but never answers.
async fn silent_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (base, task)
}

fn silent_client(base: &str) -> Stripe {
    Stripe::new(StripeConfig {
        connect_client_id: Some("ca_test".into()),
        timeout: Duration::from_millis(300),
        max_retries: 1,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..StripeConfig::new(SecretString::from("sk_test_silent")).with_base(base)
    })
    .unwrap()
}

/// Each kind of outbound call ends with [`StripeError::Unavailable`] after its attempts when
/// Stripe accepts the connection and never answers: the OAuth code exchange, deauthorize, an
/// account's API call and the platform's.
#[tokio::test]
async fn calls_to_a_stripe_that_never_answers_time_out() {
    let (base, server) = silent_server().await;
    let stripe = silent_client(&base);
    // A hang would be the failure; this bound only turns it into a message.
    let bound = Duration::from_secs(120);
    let unavailable = |what: &str, e: StripeError| match e {
        StripeError::Unavailable {
            attempts, status, ..
        } => {
            assert_eq!((attempts, status), (2, None), "{what}");
        }
        other => panic!("{what}: {other:?}"),
    };
    let e = tokio::time::timeout(bound, stripe.exchange_code("ac_x"))
        .await
        .expect("exchange_code ends")
        .unwrap_err();
    unavailable("exchange_code", e);
    let e = tokio::time::timeout(bound, stripe.deauthorize("acct_1"))
        .await
        .expect("deauthorize ends")
        .unwrap_err();
    unavailable("deauthorize", e);
    let account = stripe.account("acct_1").unwrap();
    let e = tokio::time::timeout(bound, account.retrieve_customer("cus_1"))
        .await
        .expect("retrieve ends")
        .unwrap_err();
    unavailable("retrieve_customer", e);
    let e = tokio::time::timeout(bound, account.display_name())
        .await
        .expect("display_name ends")
        .unwrap_err();
    unavailable("display_name", e);
    server.abort();
}
