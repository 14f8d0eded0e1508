use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

fn cur(c: &str) -> Currency {
    Currency::parse(c).unwrap()
}
fn em(e: &str) -> Option<Email> {
    Some(Email::parse(e).unwrap())
}
fn s(x: &str) -> Option<String> {
    Some(x.to_owned())
}

fn pi(id: &str, amount: i64, customer: Option<String>) -> PaymentIntentFact {
    PaymentIntentFact {
        id: id.into(),
        customer,
        receipt_email: None,
        succeeded: true,
        amount_received: amount,
        currency: cur("usd"),
        created: 100,
        invoice: None,
    }
}
fn invoice(id: &str, amount: i64, customer: Option<String>) -> InvoiceFact {
    InvoiceFact {
        id: id.into(),
        customer,
        customer_email: None,
        paid: true,
        amount_paid: amount,
        currency: cur("usd"),
        paid_at: 200,
        payment_intent: None,
        charge: None,
    }
}
fn session(id: &str, amount: i64) -> CheckoutSessionFact {
    CheckoutSessionFact {
        id: id.into(),
        customer: None,
        email: None,
        paid: true,
        amount_total: amount,
        currency: cur("usd"),
        created: 50,
        payment_intent: None,
        invoice: None,
    }
}
fn refund(id: &str, amount: i64, pi: Option<String>, ch: Option<String>) -> RefundFact {
    RefundFact {
        id: id.into(),
        payment_intent: pi,
        charge: ch,
        succeeded: true,
        amount,
        currency: cur("usd"),
        created: 300,
    }
}
fn customer(id: &str, email: &str) -> CustomerFact {
    CustomerFact {
        id: id.into(),
        email: em(email),
    }
}

#[test]
fn payment_mode_session_counts_once_through_its_payment_intent() {
    let mut cs = session("cs_1", 5000);
    cs.payment_intent = s("pi_1");
    cs.email = em("Guest@Example.com");
    let facts = SpendFacts {
        payment_intents: vec![pi("pi_1", 5000, None)],
        checkout_sessions: vec![cs],
        ..Default::default()
    };
    let ms = movements(&facts);
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].source, MovementSource::PaymentIntent);
    assert_eq!(ms[0].checkout_session.as_deref(), Some("cs_1"));
    // Guest checkout: the session's customer_details.email attributes it.
    assert_eq!(ms[0].email, em("guest@example.com"));
}

#[test]
fn subscription_session_invoice_payment_and_intent_count_once() {
    let mut cs = session("cs_1", 2000);
    cs.invoice = s("in_1");
    let facts = SpendFacts {
        customers: vec![customer("cus_1", "ada@example.com")],
        payment_intents: vec![pi("pi_1", 2000, s("cus_1"))],
        invoices: vec![invoice("in_1", 2000, s("cus_1"))],
        invoice_payments: vec![InvoicePaymentFact {
            id: "inpay_1".into(),
            invoice: "in_1".into(),
            payment_intent: s("pi_1"),
            charge: None,
        }],
        checkout_sessions: vec![cs],
        ..Default::default()
    };
    let ms = movements(&facts);
    assert_eq!(ms.len(), 1, "{ms:?}");
    assert_eq!(ms[0].id, "pi_1");
    assert_eq!(ms[0].invoice.as_deref(), Some("in_1"));
    let sum = summarise(&ms);
    let ada = &sum[&Email::parse("ada@example.com").unwrap()];
    assert_eq!(
        ada.totals,
        vec![SpendTotal {
            currency: cur("usd"),
            gross: 2000,
            refunded: 0,
            net: 2000
        }]
    );
    assert_eq!(ada.order_count, 1);
}

#[test]
fn older_invoice_payment_intent_link_is_honoured() {
    let mut inv = invoice("in_1", 900, None);
    inv.payment_intent = s("pi_1");
    inv.customer_email = em("bob@example.com");
    let facts = SpendFacts {
        payment_intents: vec![pi("pi_1", 900, None)],
        invoices: vec![inv],
        ..Default::default()
    };
    let ms = movements(&facts);
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].source, MovementSource::PaymentIntent);
    // Last resort: the invoice's customer_email.
    assert_eq!(ms[0].email, em("bob@example.com"));
}

#[test]
fn out_of_band_invoice_and_unlinked_session_are_their_own_movements() {
    let facts = SpendFacts {
        invoices: vec![invoice("in_oob", 1500, None)],
        checkout_sessions: vec![session("cs_free", 700)],
        ..Default::default()
    };
    let ms = movements(&facts);
    let kinds: Vec<_> = ms.iter().map(|m| (m.source, m.gross)).collect();
    assert_eq!(
        kinds,
        vec![
            (MovementSource::CheckoutSession, 700),
            (MovementSource::Invoice, 1500)
        ]
    );
}

#[test]
fn invoice_hands_over_to_its_payment_intent_once_mirrored() {
    let mut facts = SpendFacts {
        invoices: vec![invoice("in_1", 1000, None)],
        invoice_payments: vec![InvoicePaymentFact {
            id: "inpay_1".into(),
            invoice: "in_1".into(),
            payment_intent: s("pi_1"),
            charge: None,
        }],
        ..Default::default()
    };
    let before = movements(&facts);
    assert_eq!(before.iter().map(|m| m.gross).sum::<i64>(), 1000);
    assert_eq!(before[0].source, MovementSource::Invoice);
    facts.payment_intents.push(pi("pi_1", 1000, None));
    let after = movements(&facts);
    assert_eq!(after.iter().map(|m| m.gross).sum::<i64>(), 1000);
    assert_eq!(after[0].source, MovementSource::PaymentIntent);
}

#[test]
fn failed_payments_count_nothing_and_refunds_subtract() {
    let mut failed = pi("pi_fail", 800, s("cus_1"));
    failed.succeeded = false;
    let charge = ChargeFact {
        id: "ch_1".into(),
        payment_intent: s("pi_1"),
        customer: s("cus_1"),
        receipt_email: None,
        succeeded: true,
        amount: 3000,
        currency: cur("usd"),
        created: 100,
        invoice: None,
    };
    let mut pending = refund("re_pending", 100, s("pi_1"), None);
    pending.succeeded = false;
    let facts = SpendFacts {
        customers: vec![customer("cus_1", "ada@example.com")],
        payment_intents: vec![pi("pi_1", 3000, s("cus_1")), failed],
        charges: vec![charge],
        refunds: vec![
            refund("re_1", 1000, s("pi_1"), None),
            // By charge only: reaches the payment intent through the charge.
            refund("re_2", 500, None, s("ch_1")),
            pending,
        ],
        ..Default::default()
    };
    let sum = summarise(&movements(&facts));
    let ada = &sum[&Email::parse("ada@example.com").unwrap()];
    assert_eq!(
        ada.totals,
        vec![SpendTotal {
            currency: cur("usd"),
            gross: 3000,
            refunded: 1500,
            net: 1500
        }]
    );
    assert_eq!(ada.order_count, 1);
}

#[test]
fn duplicate_customers_and_currencies_stay_apart() {
    let mut yen = pi("pi_2", 5000, s("cus_2"));
    yen.currency = cur("jpy");
    yen.created = 500;
    let facts = SpendFacts {
        customers: vec![
            customer("cus_1", "Ada@Example.com"),
            customer("cus_2", " ada@example.com"),
        ],
        payment_intents: vec![pi("pi_1", 1000, s("cus_1")), yen],
        ..Default::default()
    };
    let sum = summarise(&movements(&facts));
    assert_eq!(sum.len(), 1);
    let ada = &sum[&Email::parse("ada@example.com").unwrap()];
    assert_eq!(
        ada.customer_ids.iter().cloned().collect::<Vec<_>>(),
        vec!["cus_1", "cus_2"]
    );
    assert_eq!(ada.totals.len(), 2);
    assert_eq!(ada.totals[0].currency, cur("jpy"));
    assert_eq!(ada.totals[0].net, 5000);
    assert_eq!(ada.totals[1].net, 1000);
    assert_eq!(ada.primary_total().unwrap().currency, cur("jpy"));
    assert_eq!((ada.first_purchase_at, ada.last_purchase_at), (100, 500));
}

#[test]
fn charge_without_payment_intent_is_a_movement() {
    let facts = SpendFacts {
        charges: vec![ChargeFact {
            id: "ch_legacy".into(),
            payment_intent: None,
            customer: None,
            receipt_email: em("old@example.com"),
            succeeded: true,
            amount: 4200,
            currency: cur("eur"),
            created: 10,
            invoice: None,
        }],
        refunds: vec![RefundFact {
            currency: cur("eur"),
            ..refund("re_1", 200, None, s("ch_legacy"))
        }],
        ..Default::default()
    };
    let ms = movements(&facts);
    assert_eq!(ms.len(), 1);
    assert_eq!((ms[0].source, ms[0].net()), (MovementSource::Charge, 4000));
}

// ---- properties over random link graphs ----

#[derive(Debug, Clone)]
struct Graph {
    facts: SpendFacts,
}

const CURRENCIES: &[&str] = &["usd", "eur", "jpy"];
const EMAILS: &[&str] = &["a@x.io", "B@x.io", "b@x.io ", "c@y.io"];

fn opt_index(n: usize) -> impl Strategy<Value = Option<usize>> {
    prop::option::weighted(0.6, 0..n.max(1)).prop_map(move |o| o.filter(|_| n > 0))
}

fn graph() -> impl Strategy<Value = Graph> {
    (0usize..5, 0usize..7, 0usize..6, 0usize..5, 0usize..5).prop_flat_map(
        |(n_cus, n_pi, n_ch, n_inv, n_cs)| {
            let customers = prop::collection::vec(prop::option::of(0..EMAILS.len()), n_cus);
            let pis = prop::collection::vec(
                (
                    opt_index(n_cus),
                    any::<bool>(),
                    1i64..10_000,
                    0..CURRENCIES.len(),
                    0i64..1000,
                    opt_index(n_inv),
                    prop::option::of(0..EMAILS.len()),
                ),
                n_pi,
            );
            let chs = prop::collection::vec(
                (
                    opt_index(n_pi),
                    opt_index(n_cus),
                    any::<bool>(),
                    1i64..10_000,
                    0..CURRENCIES.len(),
                    0i64..1000,
                    opt_index(n_inv),
                ),
                n_ch,
            );
            let invs = prop::collection::vec(
                (
                    opt_index(n_cus),
                    any::<bool>(),
                    0i64..10_000,
                    0..CURRENCIES.len(),
                    0i64..1000,
                    opt_index(n_pi),
                    opt_index(n_ch),
                    prop::option::of(0..EMAILS.len()),
                ),
                n_inv,
            );
            let ips = prop::collection::vec(
                (0..n_inv.max(1), opt_index(n_pi), opt_index(n_ch)),
                if n_inv > 0 { 0..6 } else { 0..1 },
            );
            let css = prop::collection::vec(
                (
                    opt_index(n_cus),
                    any::<bool>(),
                    0i64..10_000,
                    0..CURRENCIES.len(),
                    opt_index(n_pi),
                    opt_index(n_inv),
                    prop::option::of(0..EMAILS.len()),
                ),
                n_cs,
            );
            let refunds = prop::collection::vec(
                (
                    opt_index(n_pi),
                    opt_index(n_ch),
                    any::<bool>(),
                    1i64..5_000,
                    0..CURRENCIES.len(),
                    0i64..1000,
                ),
                0..6,
            );
            (customers, pis, chs, invs, ips, css, refunds).prop_map(
                move |(customers, pis, chs, invs, ips, css, refunds)| {
                    let e = |i: Option<usize>| i.and_then(|i| Email::parse(EMAILS[i]).ok());
                    let c = |i: usize| cur(CURRENCIES[i]);
                    let cus_id = |i: Option<usize>| i.map(|i| format!("cus_{i}"));
                    let pi_id = |i: Option<usize>| i.map(|i| format!("pi_{i}"));
                    let ch_id = |i: Option<usize>| i.map(|i| format!("ch_{i}"));
                    let in_id = |i: Option<usize>| i.map(|i| format!("in_{i}"));
                    let facts = SpendFacts {
                        customers: customers
                            .iter()
                            .enumerate()
                            .map(|(i, em)| CustomerFact {
                                id: format!("cus_{i}"),
                                email: e(*em),
                            })
                            .collect(),
                        payment_intents: pis
                            .iter()
                            .enumerate()
                            .map(|(i, (cus, ok, amt, cu, t, inv, rec))| PaymentIntentFact {
                                id: format!("pi_{i}"),
                                customer: cus_id(*cus),
                                receipt_email: e(*rec),
                                succeeded: *ok,
                                amount_received: *amt,
                                currency: c(*cu),
                                created: *t,
                                invoice: in_id(*inv),
                            })
                            .collect(),
                        charges: chs
                            .iter()
                            .enumerate()
                            .map(|(i, (pi, cus, ok, amt, cu, t, inv))| ChargeFact {
                                id: format!("ch_{i}"),
                                payment_intent: pi_id(*pi),
                                customer: cus_id(*cus),
                                receipt_email: None,
                                succeeded: *ok,
                                amount: *amt,
                                currency: c(*cu),
                                created: *t,
                                invoice: in_id(*inv),
                            })
                            .collect(),
                        invoices: invs
                            .iter()
                            .enumerate()
                            .map(|(i, (cus, paid, amt, cu, t, pi, ch, ce))| InvoiceFact {
                                id: format!("in_{i}"),
                                customer: cus_id(*cus),
                                customer_email: e(*ce),
                                paid: *paid,
                                amount_paid: *amt,
                                currency: c(*cu),
                                paid_at: *t,
                                payment_intent: pi_id(*pi),
                                charge: ch_id(*ch),
                            })
                            .collect(),
                        invoice_payments: if n_inv == 0 {
                            vec![]
                        } else {
                            ips.iter()
                                .enumerate()
                                .map(|(i, (inv, pi, ch))| InvoicePaymentFact {
                                    id: format!("inpay_{i}"),
                                    invoice: format!("in_{inv}"),
                                    payment_intent: pi_id(*pi),
                                    charge: ch_id(*ch),
                                })
                                .collect()
                        },
                        checkout_sessions: css
                            .iter()
                            .enumerate()
                            .map(
                                |(i, (cus, paid, amt, cu, pi, inv, em))| CheckoutSessionFact {
                                    id: format!("cs_{i}"),
                                    customer: cus_id(*cus),
                                    email: e(*em),
                                    paid: *paid,
                                    amount_total: *amt,
                                    currency: c(*cu),
                                    created: 7,
                                    payment_intent: pi_id(*pi),
                                    invoice: in_id(*inv),
                                },
                            )
                            .collect(),
                        refunds: refunds
                            .iter()
                            .enumerate()
                            .map(|(i, (pi, ch, ok, amt, cu, t))| RefundFact {
                                id: format!("re_{i}"),
                                payment_intent: pi_id(*pi),
                                charge: ch_id(*ch),
                                succeeded: *ok,
                                amount: *amt,
                                currency: c(*cu),
                                created: *t,
                            })
                            .collect(),
                    };
                    Graph { facts }
                },
            )
        },
    )
}

/// Every id that some other object says is "the same money" as `id`.
fn linked(f: &SpendFacts) -> HashMap<String, HashSet<String>> {
    let mut g: HashMap<String, HashSet<String>> = HashMap::new();
    let mut add = |a: &str, b: Option<&String>| {
        if let Some(b) = b {
            g.entry(a.to_owned()).or_default().insert(b.clone());
            g.entry(b.clone()).or_default().insert(a.to_owned());
        }
    };
    for p in &f.payment_intents {
        add(&p.id, p.invoice.as_ref());
    }
    for c in &f.charges {
        add(&c.id, c.payment_intent.as_ref());
        add(&c.id, c.invoice.as_ref());
    }
    for i in &f.invoices {
        add(&i.id, i.payment_intent.as_ref());
        add(&i.id, i.charge.as_ref());
    }
    for ip in &f.invoice_payments {
        add(&ip.invoice, ip.payment_intent.as_ref());
        add(&ip.invoice, ip.charge.as_ref());
    }
    for s in &f.checkout_sessions {
        add(&s.id, s.payment_intent.as_ref());
        add(&s.id, s.invoice.as_ref());
    }
    g
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_arrangement_of_links_counts_money_twice(g in graph()) {
        let f = &g.facts;
        let ms = movements(f);
        let ids: HashSet<&str> = ms.iter().map(|m| m.id.as_str()).collect();
        // Each object carries at most one movement.
        prop_assert_eq!(ids.len(), ms.len());

        let links = linked(f);
        let succeeded_pi: HashSet<&str> = f.payment_intents.iter().filter(|p| p.succeeded).map(|p| p.id.as_str()).collect();
        for m in &ms {
            match m.source {
                MovementSource::PaymentIntent => prop_assert!(succeeded_pi.contains(m.id.as_str())),
                MovementSource::Charge => {
                    let ch = f.charges.iter().find(|c| c.id == m.id).unwrap();
                    prop_assert!(ch.succeeded && ch.payment_intent.is_none());
                }
                // An invoice or session movement is never linked to another counted movement of
                // a payment intent or charge: that money would be counted twice.
                MovementSource::Invoice | MovementSource::CheckoutSession => {
                    for other in links.get(&m.id).into_iter().flatten() {
                        let pays = ms.iter().any(|o| &o.id == other && matches!(o.source, MovementSource::PaymentIntent | MovementSource::Charge));
                        prop_assert!(!pays, "{} counted beside {}", m.id, other);
                        if m.source == MovementSource::CheckoutSession {
                            prop_assert!(!ms.iter().any(|o| &o.id == other && o.source == MovementSource::Invoice));
                            // Nor beside a payment that settles the invoice it links.
                            for inv_link in links.get(other).into_iter().flatten() {
                                let pays = ms.iter().any(|o| &o.id == inv_link && other.starts_with("in_") && matches!(o.source, MovementSource::PaymentIntent | MovementSource::Charge));
                                prop_assert!(!pays, "{} counted beside {} through {}", m.id, inv_link, other);
                            }
                        }
                    }
                }
            }
        }
        // Completeness: money is never dropped either.
        for p in f.payment_intents.iter().filter(|p| p.succeeded) {
            prop_assert!(ids.contains(p.id.as_str()));
        }
        for c in f.charges.iter().filter(|c| c.succeeded && c.payment_intent.is_none()) {
            prop_assert!(ids.contains(c.id.as_str()));
        }
        // Each refund is applied at most once, and only in its movement's currency.
        let applied: Vec<&AppliedRefund> = ms.iter().flat_map(|m| &m.refunds).collect();
        let distinct: HashSet<&str> = applied.iter().map(|r| r.id.as_str()).collect();
        prop_assert_eq!(distinct.len(), applied.len());
        for m in &ms {
            prop_assert_eq!(m.refunded, m.refunds.iter().map(|r| r.amount).sum::<i64>());
            for r in &m.refunds {
                let fact = f.refunds.iter().find(|x| x.id == r.id).unwrap();
                prop_assert!(fact.succeeded);
                prop_assert_eq!(&fact.currency, &m.currency);
            }
        }
    }

    #[test]
    fn totals_never_mix_currencies_and_net_is_gross_less_refunded(g in graph()) {
        let ms = movements(&g.facts);
        let sum = summarise(&ms);
        for (email, row) in &sum {
            let mine: Vec<&Movement> = ms.iter().filter(|m| m.email.as_ref() == Some(email)).collect();
            prop_assert_eq!(row.order_count, mine.len() as i64);
            let mut currencies: Vec<&Currency> = row.totals.iter().map(|t| &t.currency).collect();
            let n = currencies.len();
            currencies.dedup();
            prop_assert_eq!(n, currencies.len());
            for t in &row.totals {
                prop_assert_eq!(t.net, t.gross - t.refunded);
                let same: Vec<&&Movement> = mine.iter().filter(|m| m.currency == t.currency).collect();
                prop_assert_eq!(t.gross, same.iter().map(|m| m.gross).sum::<i64>());
                prop_assert_eq!(t.refunded, same.iter().map(|m| m.refunded).sum::<i64>());
            }
            prop_assert_eq!(row.last_purchase_at, mine.iter().map(|m| m.occurred_at).max().unwrap());
        }
    }

    #[test]
    fn input_order_does_not_matter(g in graph(), seed in any::<u64>()) {
        let mut shuffled = g.facts.clone();
        let rot = |len: usize| if len == 0 { 0 } else { (seed as usize) % len };
        let r = rot(shuffled.payment_intents.len()); shuffled.payment_intents.rotate_left(r);
        let r = rot(shuffled.charges.len()); shuffled.charges.rotate_left(r);
        let r = rot(shuffled.invoices.len()); shuffled.invoices.rotate_left(r);
        shuffled.invoice_payments.reverse();
        shuffled.checkout_sessions.reverse();
        shuffled.refunds.reverse();
        let mut a = movements(&g.facts);
        let mut b = movements(&shuffled);
        for m in a.iter_mut().chain(b.iter_mut()) {
            m.refunds.sort_by(|x, y| x.id.cmp(&y.id));
        }
        prop_assert_eq!(summarise(&a), summarise(&b));
        prop_assert_eq!(a, b);
    }
}
