//! Dashboard metrics (SPEC §9) as pure functions over movements, subscriptions and MRR
//! snapshots. Definitions and a worked example live in `docs/metrics.md`.
//!
//! - Revenue: gross by the movement's month, refunds by the refund's month, net = gross −
//!   refunded of that month. Only movements of the requested currency.
//! - MRR at the end of a month: from the newest `mrr_snapshots` day on or before that instant
//!   when one exists (months since the first sync), else reconstructed from each
//!   subscription's paid window (start, or trial end, until it ended).
//! - Churn and retention compare each subscription's MRR at the end of the previous month with
//!   the end of the month.
//! - Customers are normalised emails (else the Stripe customer id); a customer is new in the
//!   month of their first movement in any currency; cohorts group customers by that month.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::Currency;
use crate::spend::Movement;

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u8,
}

/// Why a string is not a `YYYY-MM` month.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a month: expected YYYY-MM (e.g. 2026-01)")]
pub struct MonthError(pub String);

impl Month {
    /// The month, or `None` outside January 1970 – December 9999.
    pub fn new(year: i32, month: u8) -> Option<Self> {
        ((1..=12).contains(&month) && (1970..=9999).contains(&year)).then_some(Self { year, month })
    }

    /// Parses `YYYY-MM` exactly (four-digit year, two-digit month).
    pub fn parse(raw: &str) -> Result<Self, MonthError> {
        let err = || MonthError(raw.to_owned());
        let b = raw.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !raw[..4]
                .bytes()
                .chain(raw[5..].bytes())
                .all(|c| c.is_ascii_digit())
        {
            return Err(err());
        }
        let year: i32 = raw[..4].parse().map_err(|_| err())?;
        let month: u8 = raw[5..].parse().map_err(|_| err())?;
        Self::new(year, month).ok_or_else(err)
    }

    /// The month a unix time falls in (UTC).
    pub fn of_unix(secs: i64) -> Self {
        let date = time::OffsetDateTime::from_unix_timestamp(secs)
            .map(|t| t.date())
            .unwrap_or(time::Date::MIN);
        Self {
            year: date.year(),
            month: u8::from(date.month()),
        }
    }

    /// The year, e.g. `2026`.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month of the year, `1..=12`.
    pub fn month(self) -> u8 {
        self.month
    }

    /// Months since year 0, for differences.
    fn ordinal(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }

    fn from_ordinal(n: i64) -> Self {
        Self {
            year: i32::try_from(n.div_euclid(12)).unwrap_or(i32::MAX),
            month: u8::try_from(n.rem_euclid(12) + 1).unwrap_or(1),
        }
    }

    /// The month `n` months later (earlier when negative).
    pub fn add_months(self, n: i64) -> Self {
        Self::from_ordinal(self.ordinal() + n)
    }

    /// The following month.
    pub fn next(self) -> Self {
        Self::from_ordinal(self.ordinal() + 1)
    }

    /// The previous month.
    pub fn prev(self) -> Self {
        Self::from_ordinal(self.ordinal() - 1)
    }

    /// `to − self` in months (0 when equal, negative when `to` is earlier).
    pub fn months_until(self, to: Month) -> i64 {
        to.ordinal() - self.ordinal()
    }

    /// The first second of the month (unix).
    pub fn start(self) -> i64 {
        let month = time::Month::try_from(self.month).unwrap_or(time::Month::January);
        time::Date::from_calendar_date(self.year, month, 1)
            .map(|d| d.midnight().assume_utc().unix_timestamp())
            .unwrap_or(0)
    }

    /// The first second of the next month (unix): the month is `[start, end)`.
    pub fn end(self) -> i64 {
        self.next().start()
    }

    /// Every month from `self` to `to`, both included.
    pub fn through(self, to: Month) -> Vec<Month> {
        (self.ordinal()..=to.ordinal())
            .map(Self::from_ordinal)
            .collect()
    }

    /// `YYYY-MM-DD` of the month's last day, for comparing with snapshot days.
    fn last_day(self) -> String {
        day_of(self.end() - 1)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// `YYYY-MM-DD` of a unix time, UTC (the `mrr_snapshots.day` format).
pub fn day_of(secs: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| t.date())
        .unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The first second of a `YYYY-MM-DD` day (0 when malformed).
fn day_start(day: &str) -> i64 {
    let mut parts = day.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (Some(Some(y)), Some(Some(m)), Some(Some(d))) = (parts.next(), parts.next(), parts.next())
    else {
        return 0;
    };
    Month::new(i32::try_from(y).unwrap_or(0), u8::try_from(m).unwrap_or(0))
        .map_or(0, |month| month.start() + (d - 1) * 86_400)
}

/// A subscription as MRR reconstruction needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionHistory {
    /// The subscription id (`sub_…`).
    pub id: String,
    /// The Stripe customer id, when it has one.
    pub customer: Option<String>,
    /// The subscription's currency.
    pub currency: Currency,
    /// `start_date` (else `created`): when the subscription was created, trial or not.
    pub started_at: i64,
    /// `trial_end` when it had a trial: MRR counts from then.
    pub trial_end: Option<i64>,
    /// `ended_at`, else `canceled_at` of a cancelled subscription: MRR stops then.
    pub ended_at: Option<i64>,
    /// The normalised monthly amount while it is active (discounts applied, status ignored).
    pub active_mrr: i64,
    /// `false` for subscriptions that never became active (`incomplete`,
    /// `incomplete_expired`) or are still in their trial (`trialing`), and for `unpaid` and
    /// `paused` ones, whose paying window is unknown.
    pub ever_paid: bool,
    /// `false` only for `incomplete` and `incomplete_expired`: the first payment never went
    /// through, so it is not a new subscription.
    pub activated: bool,
}

impl SubscriptionHistory {
    /// Whether it counted towards MRR at instant `at` (reconstruction).
    pub fn active_at(&self, at: i64) -> bool {
        let from = self
            .trial_end
            .map_or(self.started_at, |t| t.max(self.started_at));
        self.ever_paid && from <= at && self.ended_at.is_none_or(|e| at < e)
    }
}

/// One `mrr_snapshots` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The subscription id.
    pub subscription: String,
    /// The Stripe customer id, when it has one.
    pub customer: Option<String>,
    /// The subscription's Stripe status that day.
    pub status: String,
    /// The subscription's currency.
    pub currency: Currency,
    /// The normalised monthly amount that day, in minor units.
    pub mrr: i64,
}

/// Each counted subscription's MRR at one instant: subscription id → (subscriber, MRR).
pub type MrrState = BTreeMap<String, (String, i64)>;

/// MRR over time for one currency, from snapshots where they exist, reconstructed before.
#[derive(Debug, Clone)]
pub struct MrrTimeline {
    currency: Currency,
    subscriptions: Vec<SubscriptionHistory>,
    /// day → rows of that day (already filtered to the currency).
    snapshots: BTreeMap<String, Vec<Snapshot>>,
    now: i64,
}

impl MrrTimeline {
    /// The timeline of `currency` (other currencies' rows are dropped); `now` (unix) is where the
    /// current month ends.
    pub fn new(
        currency: &Currency,
        subscriptions: Vec<SubscriptionHistory>,
        snapshots: Vec<Snapshot>,
        now: i64,
    ) -> Self {
        let mut by_day: BTreeMap<String, Vec<Snapshot>> = BTreeMap::new();
        let mut days = BTreeSet::new();
        for s in snapshots {
            // Every day a sync ran exists, even when none of its rows is in this currency.
            days.insert(s.day.clone());
            if &s.currency == currency {
                by_day.entry(s.day.clone()).or_default().push(s);
            }
        }
        for d in days {
            by_day.entry(d).or_default();
        }
        Self {
            currency: currency.clone(),
            subscriptions: subscriptions
                .into_iter()
                .filter(|s| &s.currency == currency)
                .collect(),
            snapshots: by_day,
            now,
        }
    }

    /// The first day with a snapshot (the first sync), if any.
    pub fn first_snapshot_day(&self) -> Option<&str> {
        self.snapshots.keys().next().map(String::as_str)
    }

    /// The state at the end of `month` (or now, for the current month).
    pub fn at_month_end(&self, month: Month) -> MrrState {
        let at = (month.end() - 1).min(self.now);
        let day = if month.end() - 1 <= self.now {
            month.last_day()
        } else {
            day_of(self.now)
        };
        let reconstructed = |s: &SubscriptionHistory| {
            (
                s.id.clone(),
                (
                    s.customer.clone().unwrap_or_else(|| s.id.clone()),
                    s.active_mrr,
                ),
            )
        };
        let Some((snap_day, rows)) = self.snapshots.range(..=day.clone()).next_back() else {
            return self
                .subscriptions
                .iter()
                .filter(|s| s.active_at(at))
                .map(reconstructed)
                .collect();
        };
        let mut state: MrrState = rows
            .iter()
            .filter(|r| crate::mrr::status_counts(&r.status))
            .map(|r| {
                (
                    r.subscription.clone(),
                    (
                        r.customer.clone().unwrap_or_else(|| r.subscription.clone()),
                        r.mrr,
                    ),
                )
            })
            .collect();
        if *snap_day != day {
            // No sync on that day: carry the newest snapshot forward, with the starts and ends
            // the subscriptions themselves record since (a sync missed for a few days must not
            // hide a cancellation).
            let after = day_start(snap_day) + 86_400;
            for s in &self.subscriptions {
                let ended_since = s.ended_at.is_some_and(|e| e >= after && e <= at);
                if ended_since {
                    state.remove(&s.id);
                } else if !state.contains_key(&s.id) && s.active_at(at) && !s.active_at(after - 1) {
                    let (id, v) = reconstructed(s);
                    state.insert(id, v);
                }
            }
        }
        state
    }

    /// The timeline's currency.
    pub fn currency(&self) -> &Currency {
        &self.currency
    }
}

/// One month of the revenue dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RevenueMonth {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Gross of the movements that occurred in the month, in minor units.
    pub gross: i64,
    /// Refunds created in the month, in minor units.
    pub refunded: i64,
    /// `gross − refunded`.
    pub net: i64,
    /// MRR at the end of the month, in minor units.
    pub mrr: i64,
    /// `12 × mrr`.
    pub arr: i64,
    /// Subscriptions counted in the MRR at the end of the month.
    pub active_subscriptions: i64,
}

/// Revenue, MRR, ARR and active subscriptions per month.
pub fn revenue(
    movements: &[Movement],
    timeline: &MrrTimeline,
    months: &[Month],
) -> Vec<RevenueMonth> {
    let currency = timeline.currency();
    let mut gross: BTreeMap<Month, i64> = BTreeMap::new();
    let mut refunded: BTreeMap<Month, i64> = BTreeMap::new();
    for m in movements.iter().filter(|m| &m.currency == currency) {
        *gross.entry(Month::of_unix(m.occurred_at)).or_default() += m.gross;
        for r in &m.refunds {
            *refunded.entry(Month::of_unix(r.created)).or_default() += r.amount;
        }
    }
    months
        .iter()
        .map(|&month| {
            let state = timeline.at_month_end(month);
            let mrr: i64 = state.values().map(|(_, v)| v).sum();
            let g = gross.get(&month).copied().unwrap_or(0);
            let r = refunded.get(&month).copied().unwrap_or(0);
            RevenueMonth {
                month: month.to_string(),
                gross: g,
                refunded: r,
                net: g - r,
                mrr,
                arr: 12 * mrr,
                active_subscriptions: i64::try_from(state.len()).unwrap_or(i64::MAX),
            }
        })
        .collect()
}

/// One month of the retention dashboard. Rates are fractions, `None` when the month started
/// with nothing to lose.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetentionMonth {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Subscribers of the previous month's end who have none left at this month's end, as a
    /// fraction of those subscribers.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub subscriber_churn_rate: Option<f64>,
    /// (Churned + contraction MRR) ÷ starting MRR.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub gross_mrr_churn_rate: Option<f64>,
    /// (Starting − churned − contraction + expansion MRR) ÷ starting MRR.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub net_revenue_retention: Option<f64>,
}

/// Movements of the MRR between two states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MrrMovements {
    /// MRR of the start state.
    pub starting: i64,
    /// MRR of subscriptions gone at the end.
    pub churned: i64,
    /// MRR lost by subscriptions that shrank.
    pub contraction: i64,
    /// MRR gained by subscriptions that grew (or stayed equal: adds 0).
    pub expansion: i64,
    /// MRR of subscriptions absent from the start state.
    pub new: i64,
    /// Distinct subscribers (the customer, else the subscription) of the start state.
    pub subscribers_at_start: i64,
    /// Subscribers of the start state absent from the end state.
    pub subscribers_lost: i64,
}

/// Compares two MRR states subscription by subscription.
pub fn mrr_movements(start: &MrrState, end: &MrrState) -> MrrMovements {
    let mut out = MrrMovements::default();
    for (id, (_, before)) in start {
        out.starting += before;
        match end.get(id).map(|(_, v)| *v) {
            None => out.churned += before,
            Some(after) if after < *before => out.contraction += before - after,
            Some(after) => out.expansion += after - before,
        }
    }
    for (id, (_, after)) in end {
        if !start.contains_key(id) {
            out.new += after;
        }
    }
    let subscribers = |s: &MrrState| s.values().map(|(c, _)| c.clone()).collect::<BTreeSet<_>>();
    let (before, after) = (subscribers(start), subscribers(end));
    out.subscribers_at_start = i64::try_from(before.len()).unwrap_or(i64::MAX);
    out.subscribers_lost = i64::try_from(before.difference(&after).count()).unwrap_or(i64::MAX);
    out
}

fn ratio(num: i64, den: i64) -> Option<f64> {
    // Six decimals: exact enough for a chart, stable in JSON.
    (den != 0).then(|| ((num as f64 / den as f64) * 1e6).round() / 1e6)
}

/// Subscriber churn, gross MRR churn and net revenue retention per month.
pub fn retention(timeline: &MrrTimeline, months: &[Month]) -> Vec<RetentionMonth> {
    months
        .iter()
        .map(|&month| {
            let mv = mrr_movements(
                &timeline.at_month_end(month.prev()),
                &timeline.at_month_end(month),
            );
            RetentionMonth {
                month: month.to_string(),
                subscriber_churn_rate: ratio(mv.subscribers_lost, mv.subscribers_at_start),
                gross_mrr_churn_rate: ratio(mv.churned + mv.contraction, mv.starting),
                net_revenue_retention: ratio(
                    mv.starting - mv.churned - mv.contraction + mv.expansion,
                    mv.starting,
                ),
            }
        })
        .collect()
}

/// Who a movement belongs to for customer counts: the email, else the Stripe customer.
fn customer_key(m: &Movement) -> Option<String> {
    m.email
        .as_ref()
        .map(|e| e.as_str().to_owned())
        .or_else(|| m.customer_id.clone())
}

/// A cohort row: customers whose first movement fell in `cohort`, and how many of them had a
/// movement in each month from the cohort month on (`retained[0] == customers`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cohort {
    /// The cohort month, `YYYY-MM`.
    pub cohort: String,
    /// Customers whose first movement fell in the cohort month.
    pub customers: i64,
    /// Per month from the cohort month on: how many of them had a movement in it.
    pub retained: Vec<i64>,
}

/// Cohorts of the months in `months` (retained counted up to the last month).
pub fn cohorts(movements: &[Movement], months: &[Month]) -> Vec<Cohort> {
    let (Some(&first), Some(&last)) = (months.first(), months.last()) else {
        return Vec::new();
    };
    let mut active: BTreeMap<String, BTreeSet<Month>> = BTreeMap::new();
    for m in movements {
        if let Some(key) = customer_key(m) {
            active
                .entry(key)
                .or_default()
                .insert(Month::of_unix(m.occurred_at));
        }
    }
    let mut out = Vec::new();
    for cohort in first.through(last) {
        let members: Vec<&BTreeSet<Month>> = active
            .values()
            .filter(|ms| ms.first() == Some(&cohort))
            .collect();
        let retained = cohort
            .through(last)
            .iter()
            .map(|m| i64::try_from(members.iter().filter(|ms| ms.contains(m)).count()).unwrap_or(0))
            .collect();
        out.push(Cohort {
            cohort: cohort.to_string(),
            customers: i64::try_from(members.len()).unwrap_or(0),
            retained,
        });
    }
    out
}

/// One month of the acquisition dashboard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquisitionMonth {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// Customers whose first movement (any currency) fell in the month.
    pub new_customers: i64,
    /// Subscriptions in the currency that started in the month, except never-activated
    /// (`incomplete`, `incomplete_expired`) ones.
    pub new_subscriptions: i64,
    /// Net revenue in the currency ÷ customers with a movement in that currency in the month,
    /// rounded half away from zero; `None` without such customers.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub arpu: Option<i64>,
}

/// New customers (first movement in any currency), new subscriptions (started in the month,
/// in the currency, that ever paid or are still trialing) and ARPU per month.
pub fn acquisition(
    movements: &[Movement],
    subscriptions: &[SubscriptionHistory],
    currency: &Currency,
    months: &[Month],
) -> Vec<AcquisitionMonth> {
    let mut first: BTreeMap<String, Month> = BTreeMap::new();
    for m in movements {
        if let Some(key) = customer_key(m) {
            let month = Month::of_unix(m.occurred_at);
            first
                .entry(key)
                .and_modify(|f| *f = (*f).min(month))
                .or_insert(month);
        }
    }
    let mut net: BTreeMap<Month, i64> = BTreeMap::new();
    let mut payers: BTreeMap<Month, BTreeSet<String>> = BTreeMap::new();
    for m in movements.iter().filter(|m| &m.currency == currency) {
        let month = Month::of_unix(m.occurred_at);
        *net.entry(month).or_default() += m.gross;
        for r in &m.refunds {
            *net.entry(Month::of_unix(r.created)).or_default() -= r.amount;
        }
        if let Some(key) = customer_key(m) {
            payers.entry(month).or_default().insert(key);
        }
    }
    months
        .iter()
        .map(|&month| {
            let customers = payers.get(&month).map_or(0, BTreeSet::len);
            let arpu = (customers > 0).then(|| {
                let n = i128::from(net.get(&month).copied().unwrap_or(0));
                let d = i128::try_from(customers).unwrap_or(1);
                let q = (2 * n.abs() + d) / (2 * d);
                i64::try_from(if n < 0 { -q } else { q }).unwrap_or(0)
            });
            AcquisitionMonth {
                month: month.to_string(),
                new_customers: i64::try_from(first.values().filter(|f| **f == month).count())
                    .unwrap_or(0),
                new_subscriptions: i64::try_from(
                    subscriptions
                        .iter()
                        .filter(|s| {
                            s.activated
                                && &s.currency == currency
                                && Month::of_unix(s.started_at) == month
                        })
                        .count(),
                )
                .unwrap_or(0),
                arpu,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
