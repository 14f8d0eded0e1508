#![allow(clippy::unwrap_used)]

use super::*;
use crate::Email;
use crate::spend::{AppliedRefund, MovementSource};

fn usd() -> Currency {
    Currency::parse("usd").unwrap()
}

fn m(s: &str) -> Month {
    Month::parse(s).unwrap()
}

/// Noon on the given day of a month.
fn at(month: &str, day: i64) -> i64 {
    m(month).start() + (day - 1) * 86_400 + 43_200
}

fn movement(id: &str, email: &str, month: &str, gross: i64, refunds: &[(i64, &str)]) -> Movement {
    Movement {
        source: MovementSource::PaymentIntent,
        id: id.into(),
        email: Some(Email::parse(email).unwrap()),
        customer_id: None,
        currency: usd(),
        gross,
        refunded: refunds.iter().map(|r| r.0).sum(),
        refunds: refunds
            .iter()
            .enumerate()
            .map(|(i, (amount, month))| AppliedRefund {
                id: format!("re_{id}_{i}"),
                amount: *amount,
                created: at(month, 10),
            })
            .collect(),
        occurred_at: at(month, 5),
        invoice: None,
        checkout_session: None,
    }
}

fn sub(
    id: &str,
    cus: &str,
    start: &str,
    trial_end: Option<&str>,
    end: Option<&str>,
    mrr: i64,
) -> SubscriptionHistory {
    SubscriptionHistory {
        id: id.into(),
        customer: Some(cus.into()),
        currency: usd(),
        started_at: at(start, 1),
        trial_end: trial_end.map(|t| at(t, 1)),
        ended_at: end.map(|e| at(e, 15)),
        active_mrr: mrr,
        ever_paid: true,
        activated: true,
    }
}

#[test]
fn months_parse_strictly_and_step() {
    assert_eq!(m("2026-01").to_string(), "2026-01");
    for bad in [
        "2026-1",
        "2026-13",
        "2026-00",
        "26-01",
        "2026/01",
        "",
        "2026-01-01",
        "abcd-ef",
    ] {
        assert!(Month::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(m("2025-12").next(), m("2026-01"));
    assert_eq!(m("2026-01").prev(), m("2025-12"));
    assert_eq!(m("2025-11").months_until(m("2026-02")), 3);
    assert_eq!(m("2026-02").start(), 1_769_904_000);
    assert_eq!(m("2026-01").end(), m("2026-02").start());
    assert_eq!(Month::of_unix(m("2026-02").start() - 1), m("2026-01"));
    assert_eq!(m("2025-11").through(m("2026-01")).len(), 3);
}

#[test]
fn refunds_count_in_their_own_month() {
    let mv = [
        movement("pi_1", "a@x.io", "2026-01", 10_000, &[(2_500, "2026-02")]),
        movement("pi_2", "b@x.io", "2026-02", 4_000, &[(4_000, "2026-02")]),
    ];
    let tl = MrrTimeline::new(&usd(), vec![], vec![], m("2026-03").end());
    let rows = revenue(&mv, &tl, &m("2026-01").through(m("2026-03")));
    let got: Vec<(i64, i64, i64)> = rows.iter().map(|r| (r.gross, r.refunded, r.net)).collect();
    assert_eq!(
        got,
        [(10_000, 0, 10_000), (4_000, 6_500, -2_500), (0, 0, 0)]
    );
}

#[test]
fn reconstructed_mrr_skips_trials_and_ended_subscriptions() {
    let subs = vec![
        sub("sub_a", "cus_a", "2026-01", None, None, 1_000),
        sub("sub_b", "cus_b", "2026-01", Some("2026-02"), None, 2_000),
        sub("sub_c", "cus_c", "2026-01", None, Some("2026-02"), 500),
    ];
    let tl = MrrTimeline::new(&usd(), subs, vec![], m("2026-03").end());
    let rows = revenue(&[], &tl, &m("2026-01").through(m("2026-03")));
    let got: Vec<(i64, i64, i64)> = rows
        .iter()
        .map(|r| (r.mrr, r.arr, r.active_subscriptions))
        .collect();
    // Jan: a + c (b is trialing); Feb: a + b (c ended on the 15th); Mar: a + b.
    assert_eq!(
        got,
        [(1_500, 18_000, 2), (3_000, 36_000, 2), (3_000, 36_000, 2)]
    );
}

#[test]
fn snapshots_win_from_the_first_sync_on() {
    let subs = vec![sub("sub_a", "cus_a", "2026-01", None, None, 1_000)];
    let snap = |day: &str, id: &str, cus: &str, status: &str, mrr: i64| Snapshot {
        day: day.into(),
        subscription: id.into(),
        customer: Some(cus.into()),
        status: status.into(),
        currency: usd(),
        mrr,
    };
    let snapshots = vec![
        snap("2026-02-20", "sub_a", "cus_a", "active", 1_200),
        snap("2026-02-20", "sub_b", "cus_b", "active", 800),
        snap("2026-03-20", "sub_a", "cus_a", "active", 900),
        snap("2026-03-20", "sub_b", "cus_b", "canceled", 0),
    ];
    let tl = MrrTimeline::new(&usd(), subs, snapshots, m("2026-04").end());
    assert_eq!(tl.first_snapshot_day(), Some("2026-02-20"));
    let months = m("2026-01").through(m("2026-04"));
    let mrr: Vec<i64> = revenue(&[], &tl, &months).iter().map(|r| r.mrr).collect();
    // Jan reconstructed; Feb and Mar from their snapshots; Apr carries March's forward.
    assert_eq!(mrr, [1_000, 2_000, 900, 900]);

    let ret = retention(&tl, &months[1..3]);
    // Feb: start 1000 (a), a expands to 1200, b is new: no churn, NRR 1.2.
    assert_eq!(ret[0].gross_mrr_churn_rate, Some(0.0));
    assert_eq!(ret[0].net_revenue_retention, Some(1.2));
    assert_eq!(ret[0].subscriber_churn_rate, Some(0.0));
    // Mar: start 2000; b churns (800), a contracts by 300 → (800+300)/2000 = 0.55;
    // NRR (2000 − 1100)/2000 = 0.45; one of two subscribers lost.
    assert_eq!(ret[1].gross_mrr_churn_rate, Some(0.55));
    assert_eq!(ret[1].net_revenue_retention, Some(0.45));
    assert_eq!(ret[1].subscriber_churn_rate, Some(0.5));
}

#[test]
fn retention_is_undefined_without_starting_mrr() {
    let tl = MrrTimeline::new(&usd(), vec![], vec![], m("2026-02").end());
    let ret = retention(&tl, &[m("2026-01")]);
    assert_eq!(ret[0].subscriber_churn_rate, None);
    assert_eq!(ret[0].gross_mrr_churn_rate, None);
    assert_eq!(ret[0].net_revenue_retention, None);
}

#[test]
fn cohorts_and_acquisition() {
    let mut eur = movement("pi_e", "c@x.io", "2026-01", 9_999, &[]);
    eur.currency = Currency::parse("eur").unwrap();
    let mv = [
        movement("pi_1", "a@x.io", "2026-01", 3_000, &[]),
        movement("pi_2", "b@x.io", "2026-01", 1_000, &[]),
        movement("pi_3", "a@x.io", "2026-02", 3_000, &[(1_000, "2026-02")]),
        movement("pi_4", "c@x.io", "2026-02", 2_000, &[]),
        eur,
    ];
    let months = m("2026-01").through(m("2026-02"));
    let c = cohorts(&mv, &months);
    assert_eq!(
        c[0],
        Cohort {
            cohort: "2026-01".into(),
            customers: 3,
            retained: vec![3, 2]
        }
    );
    assert_eq!(
        c[1],
        Cohort {
            cohort: "2026-02".into(),
            customers: 0,
            retained: vec![0]
        }
    );

    let mut trial = sub("sub_t", "cus_t", "2026-02", Some("2026-03"), None, 100);
    trial.ever_paid = false;
    let mut failed = sub("sub_f", "cus_f", "2026-02", None, None, 100);
    failed.activated = false;
    failed.ever_paid = false;
    let subs = [
        sub("sub_a", "cus_a", "2026-01", None, None, 1_000),
        trial,
        failed,
    ];
    let a = acquisition(&mv, &subs, &usd(), &months);
    // c@x.io paid in EUR in January first: not new in February.
    assert_eq!(
        (a[0].new_customers, a[0].new_subscriptions, a[0].arpu),
        (3, 1, Some(2_000))
    );
    // February: (3000 − 1000 + 2000) ÷ 2 payers.
    assert_eq!(
        (a[1].new_customers, a[1].new_subscriptions, a[1].arpu),
        (0, 1, Some(2_000))
    );
}

#[test]
fn a_missed_sync_carries_the_snapshot_with_known_starts_and_ends() {
    // One sync on Jan 20, none after: February carries it forward, minus sub_b that ended on
    // Feb 15, plus sub_c that started in February.
    let subs = vec![
        sub("sub_a", "cus_a", "2025-12", None, None, 1_000),
        sub("sub_b", "cus_b", "2025-12", None, Some("2026-02"), 700),
        sub("sub_c", "cus_c", "2026-02", None, None, 300),
    ];
    let snap = |id: &str, cus: &str, mrr: i64| Snapshot {
        day: "2026-01-20".into(),
        subscription: id.into(),
        customer: Some(cus.into()),
        status: "active".into(),
        currency: usd(),
        mrr,
    };
    let tl = MrrTimeline::new(
        &usd(),
        subs,
        vec![snap("sub_a", "cus_a", 1_100), snap("sub_b", "cus_b", 700)],
        m("2026-03").end(),
    );
    let mrr: Vec<i64> = revenue(&[], &tl, &m("2025-12").through(m("2026-02")))
        .iter()
        .map(|r| r.mrr)
        .collect();
    // Dec reconstructed (1000 + 700); Jan the snapshot (1100 + 700); Feb 1100 − 700 + 300.
    assert_eq!(mrr, [1_700, 1_800, 1_400]);
    assert_eq!(day_start("2026-01-20"), m("2026-01").start() + 19 * 86_400);
    assert_eq!(day_start("garbage"), 0);
}
