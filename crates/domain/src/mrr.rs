//! Monthly recurring revenue (SPEC §9): a subscription's recurring amounts normalised to one
//! month (day × 365 ÷ 12, week × 52 ÷ 12, year ÷ 12, divided by `interval_count`), times
//! quantity, less its discounts. Trials, cancelled subscriptions and metered prices are
//! excluded. Arithmetic is exact (rational, in `i128`) and rounds once, half away from zero,
//! per subscription.

use crate::Currency;

/// A price's billing interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// Daily.
    Day,
    /// Weekly.
    Week,
    /// Monthly.
    Month,
    /// Yearly.
    Year,
}

impl Interval {
    /// Stripe's spelling: `day`, `week`, `month` or `year`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }

    /// Months per interval as a fraction (numerator, denominator).
    fn per_month(self) -> (i128, i128) {
        match self {
            Self::Day => (365, 12),
            Self::Week => (52, 12),
            Self::Month => (1, 1),
            Self::Year => (1, 12),
        }
    }
}

/// One subscription item as MRR needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurringItem {
    /// The price's unit amount, in minor units.
    pub unit_amount: i64,
    /// The item's quantity.
    pub quantity: i64,
    /// The price's billing interval.
    pub interval: Interval,
    /// Intervals per billing period (every 3 months: `Month` × 3).
    pub interval_count: i64,
    /// The price's currency.
    pub currency: Currency,
    /// Metered prices bill usage after the fact: not recurring revenue.
    pub metered: bool,
}

/// A discount a subscription carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discount {
    /// A percentage off.
    PercentOff {
        /// The percentage in basis points (12.5 % = 1250).
        basis_points: i64,
    },
    /// A fixed amount off each billing period of the subscription.
    AmountOff {
        /// The amount off, in minor units.
        amount: i64,
        /// Its currency (a discount in another currency than the subscription's is ignored).
        currency: Currency,
    },
}

/// Whether a subscription status counts towards MRR: active and past-due do; trialing,
/// incomplete, unpaid, paused and canceled do not.
pub fn status_counts(status: &str) -> bool {
    matches!(status, "active" | "past_due")
}

/// The exact monthly amount of one item as a fraction; `None` when it does not fit `i128`.
fn item_monthly(item: &RecurringItem) -> Option<(i128, i128)> {
    let (num, den) = item.interval.per_month();
    let count = i128::from(item.interval_count.max(1));
    Some((
        i128::from(item.unit_amount)
            .checked_mul(i128::from(item.quantity))?
            .checked_mul(num)?,
        den.checked_mul(count)?,
    ))
}

/// `num / den` rounded half away from zero, saturated to `i64`; `None` when it does not fit.
fn round_div(num: i128, den: i128) -> Option<i64> {
    let q = num
        .checked_abs()?
        .checked_mul(2)?
        .checked_add(den)?
        .checked_div(den.checked_mul(2)?)?;
    let q = if num < 0 { -q } else { q };
    Some(i64::try_from(q).unwrap_or(if q < 0 { i64::MIN } else { i64::MAX }))
}

/// `a / b` in lowest terms.
fn reduce(num: i128, den: i128) -> (i128, i128) {
    let g = gcd(num.unsigned_abs().min(i128::MAX as u128) as i128, den);
    if g > 1 {
        (num / g, den / g)
    } else {
        (num, den)
    }
}

/// Normalised monthly amount of one item, rounded to the minor unit.
pub fn monthly_amount(item: &RecurringItem) -> i64 {
    item_monthly(item)
        .and_then(|(num, den)| round_div(num, den))
        .unwrap_or_else(|| saturate(approximate_item(item)))
}

/// The MRR of a subscription in `currency`: the sum of its licensed items in that currency,
/// less discounts, never below zero. `None` when the status does not count.
pub fn subscription_mrr(
    status: &str,
    items: &[RecurringItem],
    discounts: &[Discount],
    currency: &Currency,
) -> Option<i64> {
    if !status_counts(status) {
        return None;
    }
    let counted: Vec<&RecurringItem> = items
        .iter()
        .filter(|i| !i.metered && &i.currency == currency)
        .collect();
    // Exact when the fractions fit `i128` (every realistic subscription); a subscription of
    // many items on unusual interval counts, or with amounts Stripe never sends, would overflow
    // it, and is computed in floating point instead (off by at most a minor unit there).
    Some(
        exact_mrr(&counted, discounts, currency)
            .unwrap_or_else(|| saturate(approximate_mrr(&counted, discounts, currency))),
    )
}

fn exact_mrr(
    counted: &[&RecurringItem],
    discounts: &[Discount],
    currency: &Currency,
) -> Option<i64> {
    // Sum the fractions over a common denominator, reduced after every step.
    let (mut num, mut den) = (0i128, 1i128);
    for item in counted {
        let (n, d) = item_monthly(item)?;
        num = num.checked_mul(d)?.checked_add(n.checked_mul(den)?)?;
        den = den.checked_mul(d)?;
        (num, den) = reduce(num, den);
    }
    for discount in discounts {
        match discount {
            Discount::PercentOff { basis_points } => {
                num = num.checked_mul(i128::from(10_000 - basis_points.clamp(&0, &10_000)))?;
                den = den.checked_mul(10_000)?;
            }
            Discount::AmountOff {
                amount,
                currency: c,
            } if c == currency => {
                // Off each billing period: normalise with the subscription's first item.
                if let Some(first) = counted.first() {
                    let (pn, pd) = first.interval.per_month();
                    let count = i128::from(first.interval_count.max(1));
                    let (dn, dd) = (i128::from(*amount).checked_mul(pn)?, pd.checked_mul(count)?);
                    num = num.checked_mul(dd)?.checked_sub(dn.checked_mul(den)?)?;
                    den = den.checked_mul(dd)?;
                }
            }
            Discount::AmountOff { .. } => {}
        }
        (num, den) = reduce(num, den);
    }
    round_div(num.max(0), den)
}

fn approximate_item(item: &RecurringItem) -> f64 {
    let (num, den) = item.interval.per_month();
    item.unit_amount as f64 * item.quantity as f64 * num as f64
        / (den as f64 * item.interval_count.max(1) as f64)
}

fn approximate_mrr(counted: &[&RecurringItem], discounts: &[Discount], currency: &Currency) -> f64 {
    let mut total: f64 = counted.iter().map(|i| approximate_item(i)).sum();
    for discount in discounts {
        match discount {
            Discount::PercentOff { basis_points } => {
                total *= (10_000 - basis_points.clamp(&0, &10_000)) as f64 / 10_000.0;
            }
            Discount::AmountOff {
                amount,
                currency: c,
            } if c == currency => {
                if let Some(first) = counted.first() {
                    let (pn, pd) = first.interval.per_month();
                    total -= *amount as f64 * pn as f64
                        / (pd as f64 * first.interval_count.max(1) as f64);
                }
            }
            Discount::AmountOff { .. } => {}
        }
    }
    total.max(0.0)
}

/// Rounds half away from zero into `i64` (`as` saturates, and NaN becomes 0).
fn saturate(x: f64) -> i64 {
    x.round() as i64
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("usd").unwrap()
    }

    fn item(amount: i64, interval: Interval, count: i64, qty: i64) -> RecurringItem {
        RecurringItem {
            unit_amount: amount,
            quantity: qty,
            interval,
            interval_count: count,
            currency: usd(),
            metered: false,
        }
    }

    #[test]
    fn normalises_every_interval() {
        assert_eq!(monthly_amount(&item(1000, Interval::Month, 1, 1)), 1000);
        assert_eq!(monthly_amount(&item(12000, Interval::Year, 1, 1)), 1000);
        assert_eq!(monthly_amount(&item(3000, Interval::Month, 3, 1)), 1000);
        // 100/day → 100 × 365 / 12 = 3041.67
        assert_eq!(monthly_amount(&item(100, Interval::Day, 1, 1)), 3042);
        // 1200/week × 52 / 12 = 5200
        assert_eq!(monthly_amount(&item(1200, Interval::Week, 1, 1)), 5200);
        assert_eq!(monthly_amount(&item(1200, Interval::Week, 2, 3)), 7800);
    }

    #[test]
    fn excludes_trials_cancelled_and_metered() {
        let items = [item(1000, Interval::Month, 1, 2)];
        assert_eq!(subscription_mrr("active", &items, &[], &usd()), Some(2000));
        assert_eq!(
            subscription_mrr("past_due", &items, &[], &usd()),
            Some(2000)
        );
        assert_eq!(subscription_mrr("trialing", &items, &[], &usd()), None);
        assert_eq!(subscription_mrr("canceled", &items, &[], &usd()), None);
        let mut metered = item(1000, Interval::Month, 1, 1);
        metered.metered = true;
        assert_eq!(subscription_mrr("active", &[metered], &[], &usd()), Some(0));
    }

    #[test]
    fn discounts_and_currencies() {
        let items = [
            item(12000, Interval::Year, 1, 1),
            item(500, Interval::Month, 1, 1),
        ];
        assert_eq!(subscription_mrr("active", &items, &[], &usd()), Some(1500));
        let half = Discount::PercentOff { basis_points: 5000 };
        assert_eq!(
            subscription_mrr("active", &items, &[half], &usd()),
            Some(750)
        );
        // 1200 off per year → 100 off per month
        let off = Discount::AmountOff {
            amount: 1200,
            currency: usd(),
        };
        assert_eq!(
            subscription_mrr("active", &items, &[off], &usd()),
            Some(1400)
        );
        let eur = Currency::parse("eur").unwrap();
        assert_eq!(subscription_mrr("active", &items, &[], &eur), Some(0));
        let huge = Discount::AmountOff {
            amount: 10_000_000,
            currency: usd(),
        };
        assert_eq!(subscription_mrr("active", &items, &[huge], &usd()), Some(0));
    }
}
