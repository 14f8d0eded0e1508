//! `Stripe-Signature` verification (SPEC §6).

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of an HMAC-SHA256 signature (a `v1` is 64 hex characters).
const MAC_LEN: usize = 32;

/// Stripe's default tolerance between the signed timestamp and now, either way.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// A webhook signing secret (`whsec_…`), whatever it is kept in.
pub trait SigningSecret {
    /// The secret's text.
    fn secret_str(&self) -> &str;
}

impl SigningSecret for str {
    fn secret_str(&self) -> &str {
        self
    }
}

impl SigningSecret for String {
    fn secret_str(&self) -> &str {
        self
    }
}

impl SigningSecret for SecretString {
    fn secret_str(&self) -> &str {
        self.expose_secret()
    }
}

/// Why a signature was refused. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No (or an empty) `Stripe-Signature` header.
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    /// The header is not `t=…,v1=…` (no or bad timestamp, bad pair).
    #[error("malformed Stripe-Signature header: {0}")]
    Malformed(&'static str),
    /// The header has no `v1` signature.
    #[error("Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    /// The timestamp is further than the tolerance from now (past or future).
    #[error("signature timestamp {timestamp} is outside the tolerance of {tolerance_secs} s")]
    TimestampOutOfTolerance {
        /// The signed `t`.
        timestamp: i64,
        /// The tolerance applied.
        tolerance_secs: u64,
    },
    /// No `v1` matches any secret.
    #[error("no signature matches")]
    NoMatch,
    /// No secret configured to check against.
    #[error("no signing secret configured")]
    NoSecret,
}

/// Verify `header` (`t=…,v1=…[,v1=…]`) over the raw `payload` against any of `secrets`
/// (rotation: any secret may match any `v1`), with HMAC-SHA256 over `"{t}.{payload}"`, a
/// constant-time comparison, and `tolerance` on either side of `now`.
pub fn verify_signature<S: SigningSecret + ?Sized>(
    payload: &[u8],
    header: &str,
    secrets: &[&S],
    tolerance: Duration,
    now: OffsetDateTime,
) -> Result<(), SignatureError> {
    let header = header.trim();
    if header.is_empty() {
        return Err(SignatureError::MissingHeader);
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("element without '='"))?;
        match key.trim() {
            "t" => {
                let t = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("timestamp is not an integer"))?;
                timestamp = Some(t);
            }
            // A v1 that is not a hex SHA-256 MAC cannot match; skip it rather than refuse its
            // siblings.
            "v1" => {
                if let Ok(sig) = hex::decode(value.trim())
                    && sig.len() == MAC_LEN
                {
                    signatures.push(sig);
                }
            }
            _ => {} // v0 (test mode legacy) and future schemes are ignored, as Stripe's libraries do.
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no timestamp"))?;
    if signatures.is_empty() {
        return Err(SignatureError::NoV1Signature);
    }
    let tolerance_secs = tolerance.as_secs();
    let age = now.unix_timestamp().saturating_sub(timestamp);
    if age.unsigned_abs() > tolerance_secs {
        return Err(SignatureError::TimestampOutOfTolerance {
            timestamp,
            tolerance_secs,
        });
    }
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    for secret in secrets {
        // The body is hashed once per secret, however many `v1` the header lists: a header
        // of thousands of signatures must not make an unauthenticated request hash a 1 MiB
        // body thousands of times.
        let mac = signed_mac(secret.secret_str(), timestamp, payload);
        for sig in &signatures {
            // verify_slice compares in constant time.
            if mac.clone().verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// Why a webhook body was refused: a bad signature, or a verified body that is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The signature did not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The signature verified but the body is not an event envelope.
    #[error(transparent)]
    Event(#[from] crate::event::EventParseError),
}

/// Verify, then parse the body into an [`crate::EventEnvelope`] (lenient about the event's
/// type and API version).
pub fn construct_event<S: SigningSecret + ?Sized>(
    payload: &[u8],
    header: &str,
    secrets: &[&S],
    tolerance: Duration,
    now: OffsetDateTime,
) -> Result<crate::EventEnvelope, WebhookError> {
    verify_signature(payload, header, secrets, tolerance, now)?;
    Ok(crate::event::parse_event(payload)?)
}

/// [`verify_signature`] with the default 300 s tolerance and the current time.
pub fn verify_signature_now<S: SigningSecret + ?Sized>(
    payload: &[u8],
    header: &str,
    secrets: &[&S],
) -> Result<(), SignatureError> {
    verify_signature(
        payload,
        header,
        secrets,
        DEFAULT_TOLERANCE,
        OffsetDateTime::now_utc(),
    )
}

fn signed_mac(secret: &str, timestamp: i64, payload: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes any key length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The `v1` signature (hex) of `payload` at `timestamp`.
pub fn compute_signature(payload: &[u8], secret: &str, timestamp: i64) -> String {
    hex::encode(
        signed_mac(secret, timestamp, payload)
            .finalize()
            .into_bytes(),
    )
}

/// A `Stripe-Signature` header value `t={timestamp},v1={signature}` (for tests and the simulator).
pub fn sign_payload(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!(
        "t={timestamp},v1={}",
        compute_signature(payload, secret, timestamp)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Fixed vector made once with the official Python library (stripe==16.1.0):
    //   from stripe import WebhookSignature
    //   WebhookSignature._compute_signature("%d.%s" % (T, PAYLOAD), SECRET)
    //   WebhookSignature.verify_header(PAYLOAD, "t=%d,v1=%s" % (T, sig), SECRET, tolerance=None) -> True
    // and for the rotated secret, SECRET2 in place of SECRET.
    const PAYLOAD: &str = r#"{"id":"evt_1Tb","object":"event","type":"customer.created","data":{"object":{"id":"cus_1","object":"customer"}}}"#;
    const SECRET: &str = "whsec_test_secret_tributary";
    const SECRET2: &str = "whsec_rotated_secret_2";
    const T: i64 = 1_763_900_000;
    const SIG: &str = "29e15115526e820b2a99db93d33bc041f93993ca7dbdaf437564dd93aa377a2d";
    const SIG2: &str = "40530e9820fb897d4d5d7a744dea06082aaaf5570fb75a5fd9660db18f328d63";

    fn at(t: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(t).expect("ts")
    }

    fn verify(
        payload: &str,
        header: &str,
        secrets: &[&str],
        now: i64,
    ) -> Result<(), SignatureError> {
        verify_signature(
            payload.as_bytes(),
            header,
            secrets,
            DEFAULT_TOLERANCE,
            at(now),
        )
    }

    #[test]
    fn python_vector_matches() {
        assert_eq!(compute_signature(PAYLOAD.as_bytes(), SECRET, T), SIG);
        assert_eq!(compute_signature(PAYLOAD.as_bytes(), SECRET2, T), SIG2);
        assert_eq!(
            sign_payload(PAYLOAD.as_bytes(), SECRET, T),
            format!("t={T},v1={SIG}")
        );
        assert_eq!(
            verify(PAYLOAD, &format!("t={T},v1={SIG}"), &[SECRET], T + 10),
            Ok(())
        );
    }

    #[test]
    fn construct_event_verifies_then_parses() {
        let header = format!("t={T},v1={SIG}");
        let e = construct_event(
            PAYLOAD.as_bytes(),
            &header,
            &[SECRET],
            DEFAULT_TOLERANCE,
            at(T),
        )
        .expect("event");
        assert_eq!(e.id, "evt_1Tb");
        assert_eq!(e.event_type, "customer.created");
        assert_eq!(e.object_id(), Some("cus_1"));
        assert_eq!(
            construct_event(
                PAYLOAD.as_bytes(),
                &header,
                &["whsec_x"],
                DEFAULT_TOLERANCE,
                at(T)
            ),
            Err(WebhookError::Signature(SignatureError::NoMatch))
        );
        let body = b"[1,2]";
        let h = sign_payload(body, SECRET, T);
        assert!(matches!(
            construct_event(body, &h, &[SECRET], DEFAULT_TOLERANCE, at(T)),
            Err(WebhookError::Event(_))
        ));
    }

    #[test]
    fn secret_string_secrets() {
        let s = SecretString::from(SECRET);
        let header = format!("t={T},v1={SIG}");
        assert_eq!(
            verify_signature(PAYLOAD.as_bytes(), &header, &[&s], DEFAULT_TOLERANCE, at(T)),
            Ok(())
        );
    }

    #[test]
    fn tampered_payload_or_signature() {
        let tampered = PAYLOAD.replace("cus_1", "cus_2");
        assert_eq!(
            verify(&tampered, &format!("t={T},v1={SIG}"), &[SECRET], T),
            Err(SignatureError::NoMatch)
        );
        let mut bad = SIG.to_owned();
        bad.replace_range(0..1, "3");
        assert_eq!(
            verify(PAYLOAD, &format!("t={T},v1={bad}"), &[SECRET], T),
            Err(SignatureError::NoMatch)
        );
        // Changing t breaks the MAC too.
        assert_eq!(
            verify(PAYLOAD, &format!("t={},v1={SIG}", T + 1), &[SECRET], T),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(PAYLOAD, &format!("t={T},v1={SIG}"), &["whsec_other"], T),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn truncated_inputs() {
        // Body cut short.
        assert_eq!(
            verify(
                &PAYLOAD[..PAYLOAD.len() - 1],
                &format!("t={T},v1={SIG}"),
                &[SECRET],
                T
            ),
            Err(SignatureError::NoMatch)
        );
        // Signature cut short (odd hex and even-but-short): not a MAC at all.
        assert_eq!(
            verify(PAYLOAD, &format!("t={T},v1={}", &SIG[..63]), &[SECRET], T),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            verify(PAYLOAD, &format!("t={T},v1={}", &SIG[..62]), &[SECRET], T),
            Err(SignatureError::NoV1Signature)
        );
        // Header cut short.
        assert_eq!(
            verify(PAYLOAD, &format!("t={T}"), &[SECRET], T),
            Err(SignatureError::NoV1Signature)
        );
        assert_eq!(
            verify(PAYLOAD, "t=", &[SECRET], T),
            Err(SignatureError::Malformed("timestamp is not an integer"))
        );
        assert_eq!(
            verify(PAYLOAD, "t", &[SECRET], T),
            Err(SignatureError::Malformed("element without '='"))
        );
        assert_eq!(
            verify(PAYLOAD, &format!("v1={SIG}"), &[SECRET], T),
            Err(SignatureError::Malformed("no timestamp"))
        );
        assert_eq!(
            verify(PAYLOAD, "", &[SECRET], T),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            verify(PAYLOAD, "   ", &[SECRET], T),
            Err(SignatureError::MissingHeader)
        );
    }

    #[test]
    fn expired_and_future_dated() {
        let header = format!("t={T},v1={SIG}");
        assert_eq!(verify(PAYLOAD, &header, &[SECRET], T + 300), Ok(()));
        assert_eq!(verify(PAYLOAD, &header, &[SECRET], T - 300), Ok(()));
        assert_eq!(
            verify(PAYLOAD, &header, &[SECRET], T + 301),
            Err(SignatureError::TimestampOutOfTolerance {
                timestamp: T,
                tolerance_secs: 300
            })
        );
        // Signed 10 minutes in the future.
        assert_eq!(
            verify(PAYLOAD, &header, &[SECRET], T - 600),
            Err(SignatureError::TimestampOutOfTolerance {
                timestamp: T,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn rotated_secrets() {
        // Stripe signs with both secrets during a rotation: two v1 values.
        let header = format!("t={T},v1={SIG2},v1={SIG}");
        assert_eq!(verify(PAYLOAD, &header, &[SECRET], T), Ok(()));
        assert_eq!(verify(PAYLOAD, &header, &[SECRET2], T), Ok(()));
        // We hold both secrets while the sender uses only the new one.
        assert_eq!(
            verify(PAYLOAD, &format!("t={T},v1={SIG2}"), &[SECRET, SECRET2], T),
            Ok(())
        );
        // v0 and unknown schemes are ignored; a bad v1 does not hide a good one.
        assert_eq!(
            verify(
                PAYLOAD,
                &format!("t={T},v0=abc,v1=zz,v1={SIG},x=1"),
                &[SECRET],
                T
            ),
            Ok(())
        );
        assert_eq!(
            verify(PAYLOAD, &format!("t={T},v1={SIG}"), &[] as &[&str], T),
            Err(SignatureError::NoSecret)
        );
    }
}
