//! Hostile values through the domain's parsers and MRR arithmetic: any input answers, nothing
//! panics or overflows. (A business's own webhook endpoint is signed with a secret its owner
//! knows, so amounts, quantities and intervals reach MRR exactly as a tenant wrote them.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use tributary_domain::metrics::Month;
use tributary_domain::mrr::{Discount, Interval, RecurringItem, monthly_amount, subscription_mrr};
use tributary_domain::{BusinessId, Currency, Email, StripeAccountId};

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn interval() -> impl Strategy<Value = Interval> {
    prop_oneof![
        Just(Interval::Day),
        Just(Interval::Week),
        Just(Interval::Month),
        Just(Interval::Year)
    ]
}

fn usd() -> Currency {
    Currency::parse("usd").unwrap()
}

/// Any item at all: amounts, quantities and interval counts across the whole `i64` range.
fn any_item() -> impl Strategy<Value = RecurringItem> {
    (
        any::<i64>(),
        any::<i64>(),
        interval(),
        any::<i64>(),
        any::<bool>(),
    )
        .prop_map(
            |(unit_amount, quantity, interval, interval_count, metered)| RecurringItem {
                unit_amount,
                quantity,
                interval,
                interval_count,
                currency: usd(),
                metered,
            },
        )
}

/// An item as Stripe allows it: amounts up to eight digits, intervals up to a year.
fn stripe_item() -> impl Strategy<Value = RecurringItem> {
    (interval(), 0i64..=99_999_999, 1i64..=10_000).prop_flat_map(|(interval, amount, qty)| {
        let max_count = match interval {
            Interval::Day => 365,
            Interval::Week => 52,
            Interval::Month => 12,
            Interval::Year => 1,
        };
        (1i64..=max_count).prop_map(move |count| RecurringItem {
            unit_amount: amount,
            quantity: qty,
            interval,
            interval_count: count,
            currency: usd(),
            metered: false,
        })
    })
}

fn any_discount() -> impl Strategy<Value = Discount> {
    prop_oneof![
        any::<i64>().prop_map(|basis_points| Discount::PercentOff { basis_points }),
        any::<i64>().prop_map(|amount| Discount::AmountOff {
            amount,
            currency: usd()
        }),
    ]
}

fn stripe_discount() -> impl Strategy<Value = Discount> {
    prop_oneof![
        (0i64..=10_000).prop_map(|basis_points| Discount::PercentOff { basis_points }),
        (0i64..=99_999_999).prop_map(|amount| Discount::AmountOff {
            amount,
            currency: usd()
        }),
    ]
}

/// The same MRR in floating point, as a reference.
fn reference(items: &[RecurringItem], discounts: &[Discount]) -> f64 {
    let per_month = |i: Interval| match i {
        Interval::Day => 365.0 / 12.0,
        Interval::Week => 52.0 / 12.0,
        Interval::Month => 1.0,
        Interval::Year => 1.0 / 12.0,
    };
    let mut total: f64 = items
        .iter()
        .map(|i| {
            i.unit_amount as f64 * i.quantity as f64 * per_month(i.interval)
                / i.interval_count as f64
        })
        .sum();
    for d in discounts {
        match d {
            Discount::PercentOff { basis_points } => {
                total *= (10_000 - basis_points) as f64 / 10_000.0
            }
            Discount::AmountOff { amount, .. } => {
                if let Some(first) = items.first() {
                    total -=
                        *amount as f64 * per_month(first.interval) / first.interval_count as f64;
                }
            }
        }
    }
    total.max(0.0)
}

proptest! {
    #![proptest_config(config(1000))]

    /// Whatever the items and discounts, MRR is a number and never negative.
    #[test]
    fn mrr_of_any_subscription_answers(
        items in prop::collection::vec(any_item(), 0..24),
        discounts in prop::collection::vec(any_discount(), 0..6),
    ) {
        let mrr = subscription_mrr("active", &items, &discounts, &usd());
        prop_assert!(mrr.is_some_and(|m| m >= 0), "{mrr:?}");
        for item in &items {
            let _ = monthly_amount(item);
        }
    }

    /// Up to Stripe's 20 items on any interval counts Stripe allows, with discounts: exact
    /// where it fits, and never more than a minor unit from the floating-point reference.
    #[test]
    fn mrr_of_stripe_shaped_subscriptions_matches_the_reference(
        items in prop::collection::vec(stripe_item(), 0..=20),
        discounts in prop::collection::vec(stripe_discount(), 0..=5),
    ) {
        let mrr = subscription_mrr("active", &items, &discounts, &usd()).unwrap();
        let want = reference(&items, &discounts);
        prop_assert!(
            (mrr as f64 - want).abs() <= 1.0 + want * 1e-12,
            "{mrr} vs {want}"
        );
    }

    /// The parsers of what arrives from outside take any text.
    #[test]
    fn parsers_take_any_text(raw in "\\PC{0,80}|[ -~]{0,80}") {
        if let Ok(email) = Email::parse(&raw) {
            prop_assert_eq!(email.as_str(), email.as_str().trim().to_lowercase());
        }
        let _ = Email::normalise(Some(&raw));
        if let Ok(c) = Currency::parse(&raw) {
            prop_assert_eq!(c.as_str().len(), 3);
        }
        if let Ok(id) = BusinessId::parse(&raw) {
            prop_assert_eq!(id.as_str(), raw.as_str());
        }
        if let Ok(acct) = StripeAccountId::parse(&raw) {
            prop_assert!(acct.as_str().starts_with("acct_"));
        }
        if let Ok(month) = Month::parse(&raw) {
            prop_assert_eq!(month.to_string(), raw);
        }
    }

    /// Months of any unix time, however far out.
    #[test]
    fn months_of_any_time(secs in any::<i64>(), n in -100_000i64..100_000) {
        let m = Month::of_unix(secs);
        let _ = m.add_months(n);
        let _ = tributary_domain::metrics::day_of(secs);
    }
}
