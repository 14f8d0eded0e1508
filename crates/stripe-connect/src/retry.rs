//! Pure retry policy: which answers are retried and how long to wait.

use std::time::Duration;

use rand::Rng;
use time::OffsetDateTime;

/// What one attempt produced, as far as the retry policy cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome<'a> {
    /// An HTTP answer with this status, `Stripe-Should-Retry` header and Stripe error code.
    Status {
        /// HTTP status.
        status: u16,
        /// Parsed `Stripe-Should-Retry`, if present.
        should_retry: Option<bool>,
        /// `error.code` from the body, if any.
        code: Option<&'a str>,
    },
    /// No answer: timeout, refused or reset connection, truncated body.
    Transport,
}

/// Whether another attempt should be made after `outcome` (attempt budget aside).
///
/// `Stripe-Should-Retry: true` forces a retry and `false` forbids one; without it `429`
/// (`rate_limit`, `lock_timeout`), `5xx` and transport failures are retried and other `4xx`
/// are not.
pub fn should_retry(outcome: AttemptOutcome<'_>) -> bool {
    match outcome {
        AttemptOutcome::Transport => true,
        AttemptOutcome::Status {
            status,
            should_retry,
            code,
        } => {
            if (200..300).contains(&status) {
                return false;
            }
            if let Some(hint) = should_retry {
                return hint;
            }
            status == 429 || status >= 500 || code == Some("lock_timeout")
        }
    }
}

/// Parse `Retry-After`: delay seconds (integer or decimal) or an HTTP date.
pub fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = at - now;
    Some(if delta.is_negative() {
        Duration::ZERO
    } else {
        Duration::try_from(delta).unwrap_or(Duration::ZERO)
    })
}

/// Delay before retry number `retry` (0 for the first retry): exponential from `initial`,
/// capped at `max`, with "equal jitter" (uniform between half and all of the step) so that
/// clients throttled together do not come back together. A `Retry-After` longer than that
/// wins, capped at `max`.
pub fn backoff_delay(
    retry: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let step = initial
        .saturating_mul(2u32.saturating_pow(retry.min(20)))
        .min(max);
    let half = step / 2;
    let jitter = if half.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_nanos(
            rng.random_range(0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX)),
        )
    };
    let delay = half + jitter;
    match retry_after {
        Some(ra) => delay.max(ra.min(max)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn status(status: u16, should_retry: Option<bool>, code: Option<&str>) -> bool {
        should_retry_fn(AttemptOutcome::Status {
            status,
            should_retry,
            code,
        })
    }
    fn should_retry_fn(o: AttemptOutcome<'_>) -> bool {
        should_retry(o)
    }

    #[test]
    fn retry_matrix() {
        assert!(status(429, None, Some("rate_limit")));
        assert!(status(429, None, Some("lock_timeout")));
        assert!(status(500, None, None));
        assert!(status(503, None, None));
        assert!(should_retry(AttemptOutcome::Transport));
        assert!(!status(400, None, None));
        assert!(!status(403, None, Some("account_invalid")));
        assert!(!status(404, None, Some("resource_missing")));
        assert!(!status(409, None, None));
        // The header wins both ways.
        assert!(status(409, Some(true), None));
        assert!(!status(500, Some(false), None));
        assert!(!status(429, Some(false), None));
        assert!(!status(200, Some(true), None));
    }

    #[test]
    fn retry_after_forms() {
        let now = OffsetDateTime::from_unix_timestamp(1_445_412_470).expect("ts");
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now),
            Some(Duration::from_millis(500))
        );
        // Wed, 21 Oct 2015 07:28:00 GMT = 1445412480
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for retry in 0..10 {
            let step = (initial * 2u32.pow(retry)).min(max);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..50 {
                let d = backoff_delay(retry, initial, max, None, &mut rng);
                assert!(
                    d >= step / 2 && d <= step,
                    "retry {retry}: {d:?} vs {step:?}"
                );
                seen.insert(d);
            }
            assert!(seen.len() > 1, "jitter must vary the delay");
        }
    }

    #[test]
    fn backoff_honours_retry_after() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let d = backoff_delay(
            0,
            Duration::from_millis(10),
            Duration::from_secs(30),
            Some(Duration::from_secs(3)),
            &mut rng,
        );
        assert_eq!(d, Duration::from_secs(3));
        // Capped at max.
        let d = backoff_delay(
            0,
            Duration::from_millis(10),
            Duration::from_secs(5),
            Some(Duration::from_secs(600)),
            &mut rng,
        );
        assert_eq!(d, Duration::from_secs(5));
    }
}
