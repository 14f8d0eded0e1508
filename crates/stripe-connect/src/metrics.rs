//! Metric names this crate records through the `metrics` facade (exported by the API's
//! `GET /metrics`; see `docs/observability.md`), and the `endpoint` label.

/// Counter: HTTP attempts to Stripe (retries included), by `endpoint` and `status` (the HTTP
/// status, or `transport` when no answer came).
pub const REQUESTS: &str = "tributary_stripe_requests_total";
/// Histogram: seconds per attempt, by `endpoint`.
pub const REQUEST_DURATION: &str = "tributary_stripe_request_duration_seconds";
/// Counter: `429` answers.
pub const RATE_LIMITED: &str = "tributary_stripe_rate_limited_total";
/// Counter: attempts that were retries.
pub const RETRIES: &str = "tributary_stripe_retries_total";

/// The `endpoint` label of a request URL: its path from `/v1` (or `/oauth`) on, each object id
/// replaced by `{id}`, so the label set stays small: `/v1/invoices/in_1Abc/lines` →
/// `/v1/invoices/{id}/lines`.
///
/// A segment is an id unless it looks like a resource name: lowercase words of three or more
/// letters joined by `_` (`customers`, `line_items`, `search`). Stripe's ids carry a short
/// prefix and random mixed-case letters and digits (`cus_NffrFeUfNV2Hib`), so they never pass.
pub fn endpoint_label(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or_default();
    let path = path
        .find("://")
        .map(|i| &path[i + 3..])
        .map_or(path, |rest| rest.find('/').map_or("", |j| &rest[j..]));
    // Only the API part: a base URL may carry a prefix of its own.
    let start = ["/v1/", "/oauth/"]
        .iter()
        .filter_map(|p| path.find(p))
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for segment in path[start..].split('/').filter(|s| !s.is_empty()).take(6) {
        out.push('/');
        if is_name(segment) {
            out.push_str(segment);
        } else {
            out.push_str("{id}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn is_name(segment: &str) -> bool {
    segment == "v1"
        || segment.split('_').all(|word| {
            word.len() >= 3 && word.len() <= 24 && word.bytes().all(|b| b.is_ascii_lowercase())
        })
}

#[cfg(test)]
mod tests {
    use super::endpoint_label;

    #[test]
    fn ids_become_placeholders() {
        for (url, label) in [
            ("http://127.0.0.1:9/v1/customers?limit=100", "/v1/customers"),
            (
                "https://api.stripe.com/v1/invoices/in_1NzAbc9/lines?limit=100",
                "/v1/invoices/{id}/lines",
            ),
            (
                "https://api.stripe.com/v1/checkout/sessions/cs_test_a1B2/line_items",
                "/v1/checkout/sessions/{id}/line_items",
            ),
            (
                "https://api.stripe.com/v1/customers/cus_NffrFeUfNV2Hib",
                "/v1/customers/{id}",
            ),
            (
                "https://api.stripe.com/v1/accounts/acct_1Example",
                "/v1/accounts/{id}",
            ),
            (
                "https://api.stripe.com/v1/invoice_payments",
                "/v1/invoice_payments",
            ),
            (
                "https://api.stripe.com/v1/customers/search?query=x",
                "/v1/customers/search",
            ),
            ("https://connect.stripe.com/oauth/token", "/oauth/token"),
            ("http://sim.local/prefix/v1/events", "/v1/events"),
            ("http://sim.local", "/"),
        ] {
            assert_eq!(endpoint_label(url), label, "{url}");
        }
    }
}
