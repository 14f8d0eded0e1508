//! Spend, deduplicated (SPEC §7).
//!
//! The same money shows up on several Stripe objects: a checkout session, its payment intent,
//! an invoice and the invoice payment that settles it. Spend counts **money movements**, each
//! exactly once:
//!
//! 1. a succeeded payment intent is a movement (`amount_received`); a succeeded charge with no
//!    payment intent is a movement;
//! 2. an invoice links to movements through invoice payments, or the older
//!    `invoice.payment_intent` / `invoice.charge` (and `payment_intent.invoice` /
//!    `charge.invoice`) fields; a paid invoice that no link ties to a movement is itself a
//!    movement of `amount_paid`;
//! 3. a paid checkout session adds nothing when its payment intent is a movement or its
//!    invoice's money is counted; otherwise it is a movement of `amount_total`;
//! 4. succeeded refunds subtract from the movement they refund;
//! 5. totals are per currency, never added across currencies;
//! 6. a movement belongs to the normalised email of its customer, else the receipt email, else
//!    the checkout session's `customer_details.email`, else the invoice's `customer_email`.
//!
//! A link counts only when it reaches a movement that is present in the facts: an invoice whose
//! payment intent has not been mirrored yet counts as its own movement until the payment intent
//! arrives, then hands over to it. At every instant each unit of money is counted once.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::{Currency, Email};

/// A Stripe customer as far as spend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerFact {
    /// The customer id (`cus_…`).
    pub id: String,
    /// The customer's normalised email.
    pub email: Option<Email>,
}

/// A payment intent as far as spend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntentFact {
    /// The payment intent id (`pi_…`).
    pub id: String,
    /// Its customer id.
    pub customer: Option<String>,
    /// The normalised `receipt_email`.
    pub receipt_email: Option<Email>,
    /// `status == "succeeded"`.
    pub succeeded: bool,
    /// `amount_received`, in minor units.
    pub amount_received: i64,
    /// Its currency.
    pub currency: Currency,
    /// `created` (unix).
    pub created: i64,
    /// The older API's `payment_intent.invoice`.
    pub invoice: Option<String>,
}

/// A charge as far as spend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeFact {
    /// The charge id (`ch_…`).
    pub id: String,
    /// The payment intent it belongs to, if any.
    pub payment_intent: Option<String>,
    /// Its customer id.
    pub customer: Option<String>,
    /// `receipt_email`, else `billing_details.email`.
    pub receipt_email: Option<Email>,
    /// `status == "succeeded"` and `paid`.
    pub succeeded: bool,
    /// The captured amount.
    pub amount: i64,
    /// Its currency.
    pub currency: Currency,
    /// `created` (unix).
    pub created: i64,
    /// The older API's `charge.invoice`.
    pub invoice: Option<String>,
}

/// An invoice as far as spend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFact {
    /// The invoice id (`in_…`).
    pub id: String,
    /// Its customer id.
    pub customer: Option<String>,
    /// The normalised `customer_email`.
    pub customer_email: Option<Email>,
    /// `status == "paid"`.
    pub paid: bool,
    /// `amount_paid`, in minor units.
    pub amount_paid: i64,
    /// Its currency.
    pub currency: Currency,
    /// `status_transitions.paid_at`, else `created`.
    pub paid_at: i64,
    /// The older API's `invoice.payment_intent`.
    pub payment_intent: Option<String>,
    /// The older API's `invoice.charge`.
    pub charge: Option<String>,
}

/// An `invoice_payment` object: the current API's link from an invoice to what paid it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePaymentFact {
    /// The invoice payment id (`inpay_…`).
    pub id: String,
    /// The invoice it pays.
    pub invoice: String,
    /// `payment.payment_intent`, when a payment intent paid it.
    pub payment_intent: Option<String>,
    /// `payment.charge`, when a charge paid it.
    pub charge: Option<String>,
}

/// A checkout session as far as spend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSessionFact {
    /// The session id (`cs_…`).
    pub id: String,
    /// Its customer id.
    pub customer: Option<String>,
    /// `customer_details.email`.
    pub email: Option<Email>,
    /// `payment_status == "paid"`.
    pub paid: bool,
    /// `amount_total`, in minor units.
    pub amount_total: i64,
    /// Its currency.
    pub currency: Currency,
    /// `created` (unix).
    pub created: i64,
    /// The payment intent it created, if any.
    pub payment_intent: Option<String>,
    /// The invoice it created, if any.
    pub invoice: Option<String>,
}

/// A refund as far as spend needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFact {
    /// The refund id (`re_…`).
    pub id: String,
    /// The payment intent it refunds, if known.
    pub payment_intent: Option<String>,
    /// The charge it refunds, if known.
    pub charge: Option<String>,
    /// `status == "succeeded"`.
    pub succeeded: bool,
    /// The refunded amount, in minor units.
    pub amount: i64,
    /// Its currency.
    pub currency: Currency,
    /// `created` (unix): the refund counts in this month.
    pub created: i64,
}

/// Everything spend is computed from. Callers pass the rows they hold (deleted rows left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpendFacts {
    /// Customers.
    pub customers: Vec<CustomerFact>,
    /// Payment intents.
    pub payment_intents: Vec<PaymentIntentFact>,
    /// Charges.
    pub charges: Vec<ChargeFact>,
    /// Invoices.
    pub invoices: Vec<InvoiceFact>,
    /// Invoice payments.
    pub invoice_payments: Vec<InvoicePaymentFact>,
    /// Checkout sessions.
    pub checkout_sessions: Vec<CheckoutSessionFact>,
    /// Refunds.
    pub refunds: Vec<RefundFact>,
}

/// Which object carries a movement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementSource {
    /// A succeeded payment intent.
    PaymentIntent,
    /// A succeeded charge without a payment intent.
    Charge,
    /// A paid invoice that no link ties to a movement.
    Invoice,
    /// A paid checkout session whose money no other movement counts.
    CheckoutSession,
}

/// One refund applied to a movement, kept for monthly series (refunds count in their own month).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRefund {
    /// The refund id.
    pub id: String,
    /// The refunded amount, in minor units.
    pub amount: i64,
    /// When it was created (unix).
    pub created: i64,
}

/// One unit of money that moved, counted once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// Which kind of object carries it.
    pub source: MovementSource,
    /// The id of the object that carries it (`pi_…`, `ch_…`, `in_…`, `cs_…`).
    pub id: String,
    /// Whose it is: the normalised email (SPEC §7, rule 6), if any.
    pub email: Option<Email>,
    /// The Stripe customer, if any.
    pub customer_id: Option<String>,
    /// Its currency.
    pub currency: Currency,
    /// The amount that moved, in minor units.
    pub gross: i64,
    /// The sum of the refunds applied to it.
    pub refunded: i64,
    /// The refunds applied to it.
    pub refunds: Vec<AppliedRefund>,
    /// When it happened (unix): `created`, or the invoice's `paid_at`.
    pub occurred_at: i64,
    /// The invoice this movement settles, when known.
    pub invoice: Option<String>,
    /// The checkout session this movement settles, when known.
    pub checkout_session: Option<String>,
}

impl Movement {
    /// `gross − refunded` (saturating).
    pub fn net(&self) -> i64 {
        self.gross.saturating_sub(self.refunded)
    }
}

/// Gross, refunded and net of one currency.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SpendTotal {
    /// The currency.
    pub currency: Currency,
    /// Gross, in minor units.
    pub gross: i64,
    /// Refunded, in minor units.
    pub refunded: i64,
    /// `gross − refunded`.
    pub net: i64,
}

/// The spend of one normalised email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailSpend {
    /// The normalised email.
    pub email: Email,
    /// The Stripe customers its movements carry.
    pub customer_ids: BTreeSet<String>,
    /// One entry per currency, sorted by currency code.
    pub totals: Vec<SpendTotal>,
    /// Movements, in any currency.
    pub order_count: i64,
    /// The earliest movement (unix).
    pub first_purchase_at: i64,
    /// The latest movement (unix).
    pub last_purchase_at: i64,
}

impl EmailSpend {
    /// The currency of the largest net total (ties: the lower currency code).
    pub fn primary_total(&self) -> Option<&SpendTotal> {
        self.totals
            .iter()
            .max_by(|a, b| a.net.cmp(&b.net).then_with(|| b.currency.cmp(&a.currency)))
    }
}

struct Index<'a> {
    customers: HashMap<&'a str, &'a CustomerFact>,
    payment_intents: HashMap<&'a str, &'a PaymentIntentFact>,
    charges: HashMap<&'a str, &'a ChargeFact>,
    invoices: HashMap<&'a str, &'a InvoiceFact>,
    /// invoice id → payment intents and charges linked to it, by any link.
    invoice_links: HashMap<&'a str, (BTreeSet<&'a str>, BTreeSet<&'a str>)>,
    /// payment intent or charge id → invoice it pays.
    paid_invoice_of: HashMap<&'a str, &'a str>,
    /// payment intent or invoice id → session that links it.
    session_of: HashMap<&'a str, &'a CheckoutSessionFact>,
    /// payment intent id → the receipt email of its first charge (in `facts` order) that has one.
    charge_email_of: HashMap<&'a str, &'a Email>,
}

impl<'a> Index<'a> {
    fn new(f: &'a SpendFacts) -> Self {
        let mut invoice_links: HashMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = HashMap::new();
        let mut link = |inv: &'a str, pi: Option<&'a str>, ch: Option<&'a str>| {
            let entry = invoice_links.entry(inv).or_default();
            entry.0.extend(pi);
            entry.1.extend(ch);
        };
        for ip in &f.invoice_payments {
            link(
                &ip.invoice,
                ip.payment_intent.as_deref(),
                ip.charge.as_deref(),
            );
        }
        for inv in &f.invoices {
            link(
                &inv.id,
                inv.payment_intent.as_deref(),
                inv.charge.as_deref(),
            );
        }
        for pi in &f.payment_intents {
            if let Some(inv) = &pi.invoice {
                link(inv, Some(&pi.id), None);
            }
        }
        for ch in &f.charges {
            if let Some(inv) = &ch.invoice {
                link(inv, None, Some(&ch.id));
            }
        }
        // Smallest invoice id wins when data links one payment to two invoices: deterministic.
        let mut paid_invoice_of: HashMap<&str, &str> = HashMap::new();
        let mut sorted: Vec<_> = invoice_links.iter().collect();
        sorted.sort_by_key(|(inv, _)| **inv);
        for (inv, (pis, chs)) in sorted {
            for id in pis.iter().chain(chs.iter()) {
                paid_invoice_of.entry(id).or_insert(inv);
            }
        }
        let mut session_of: HashMap<&str, &CheckoutSessionFact> = HashMap::new();
        let mut sessions: Vec<_> = f.checkout_sessions.iter().collect();
        sessions.sort_by(|a, b| a.id.cmp(&b.id));
        for s in sessions {
            for id in [s.payment_intent.as_deref(), s.invoice.as_deref()]
                .into_iter()
                .flatten()
            {
                session_of.entry(id).or_insert(s);
            }
        }
        let mut charge_email_of: HashMap<&str, &Email> = HashMap::new();
        for c in &f.charges {
            if let (Some(pi), Some(email)) = (c.payment_intent.as_deref(), &c.receipt_email) {
                charge_email_of.entry(pi).or_insert(email);
            }
        }
        Self {
            customers: f.customers.iter().map(|c| (c.id.as_str(), c)).collect(),
            payment_intents: f
                .payment_intents
                .iter()
                .map(|p| (p.id.as_str(), p))
                .collect(),
            charges: f.charges.iter().map(|c| (c.id.as_str(), c)).collect(),
            invoices: f.invoices.iter().map(|i| (i.id.as_str(), i)).collect(),
            invoice_links,
            paid_invoice_of,
            session_of,
            charge_email_of,
        }
    }

    fn pi_is_movement(&self, id: &str) -> bool {
        self.payment_intents.get(id).is_some_and(|p| p.succeeded)
    }

    fn charge_is_movement(&self, id: &str) -> bool {
        self.charges
            .get(id)
            .is_some_and(|c| c.succeeded && c.payment_intent.is_none())
    }

    /// The movement a charge's money belongs to: the charge itself, or its payment intent.
    fn movement_of_charge(&self, id: &str) -> Option<(MovementSource, &'a str)> {
        let ch = self.charges.get(id)?;
        match ch.payment_intent.as_deref() {
            None if ch.succeeded => Some((MovementSource::Charge, ch.id.as_str())),
            Some(pi) => self
                .payment_intents
                .get_key_value(pi)
                .filter(|(_, p)| p.succeeded)
                .map(|(k, _)| (MovementSource::PaymentIntent, *k)),
            None => None,
        }
    }

    /// Whether some link ties the invoice to a payment intent or charge that is a movement.
    fn invoice_covered(&self, id: &str) -> bool {
        self.invoice_links.get(id).is_some_and(|(pis, chs)| {
            pis.iter().any(|p| self.pi_is_movement(p))
                || chs.iter().any(|c| self.movement_of_charge(c).is_some())
        })
    }

    fn invoice_counted(&self, id: &str) -> bool {
        self.invoice_covered(id) || self.invoices.get(id).is_some_and(|i| i.paid)
    }

    fn customer_email(&self, customer: Option<&str>) -> Option<Email> {
        customer
            .and_then(|c| self.customers.get(c))
            .and_then(|c| c.email.clone())
    }
}

/// Every money movement in `facts`, each exactly once, sorted by time then id.
pub fn movements(facts: &SpendFacts) -> Vec<Movement> {
    let ix = Index::new(facts);
    let mut out: Vec<Movement> = Vec::new();

    for pi in facts.payment_intents.iter().filter(|p| p.succeeded) {
        let invoice = ix
            .paid_invoice_of
            .get(pi.id.as_str())
            .and_then(|i| ix.invoices.get(i));
        let session = ix
            .session_of
            .get(pi.id.as_str())
            .or_else(|| invoice.and_then(|i| ix.session_of.get(i.id.as_str())));
        let customer = pi
            .customer
            .clone()
            .or_else(|| invoice.and_then(|i| i.customer.clone()))
            .or_else(|| session.and_then(|s| s.customer.clone()));
        let email = ix
            .customer_email(customer.as_deref())
            .or_else(|| pi.receipt_email.clone())
            .or_else(|| ix.charge_email_of.get(pi.id.as_str()).map(|&e| e.clone()))
            .or_else(|| session.and_then(|s| s.email.clone()))
            .or_else(|| invoice.and_then(|i| i.customer_email.clone()));
        out.push(Movement {
            source: MovementSource::PaymentIntent,
            id: pi.id.clone(),
            email,
            customer_id: customer,
            currency: pi.currency.clone(),
            gross: pi.amount_received,
            refunded: 0,
            refunds: Vec::new(),
            occurred_at: pi.created,
            invoice: invoice.map(|i| i.id.clone()),
            checkout_session: session.map(|s| s.id.clone()),
        });
    }

    for ch in facts
        .charges
        .iter()
        .filter(|c| ix.charge_is_movement(&c.id))
    {
        let invoice = ix
            .paid_invoice_of
            .get(ch.id.as_str())
            .and_then(|i| ix.invoices.get(i));
        let session = invoice.and_then(|i| ix.session_of.get(i.id.as_str()));
        let customer = ch
            .customer
            .clone()
            .or_else(|| invoice.and_then(|i| i.customer.clone()))
            .or_else(|| session.and_then(|s| s.customer.clone()));
        let email = ix
            .customer_email(customer.as_deref())
            .or_else(|| ch.receipt_email.clone())
            .or_else(|| session.and_then(|s| s.email.clone()))
            .or_else(|| invoice.and_then(|i| i.customer_email.clone()));
        out.push(Movement {
            source: MovementSource::Charge,
            id: ch.id.clone(),
            email,
            customer_id: customer,
            currency: ch.currency.clone(),
            gross: ch.amount,
            refunded: 0,
            refunds: Vec::new(),
            occurred_at: ch.created,
            invoice: invoice.map(|i| i.id.clone()),
            checkout_session: session.map(|s| s.id.clone()),
        });
    }

    for inv in facts
        .invoices
        .iter()
        .filter(|i| i.paid && !ix.invoice_covered(&i.id))
    {
        let session = ix.session_of.get(inv.id.as_str());
        let customer = inv
            .customer
            .clone()
            .or_else(|| session.and_then(|s| s.customer.clone()));
        let email = ix
            .customer_email(customer.as_deref())
            .or_else(|| session.and_then(|s| s.email.clone()))
            .or_else(|| inv.customer_email.clone());
        out.push(Movement {
            source: MovementSource::Invoice,
            id: inv.id.clone(),
            email,
            customer_id: customer,
            currency: inv.currency.clone(),
            gross: inv.amount_paid,
            refunded: 0,
            refunds: Vec::new(),
            occurred_at: inv.paid_at,
            invoice: Some(inv.id.clone()),
            checkout_session: session.map(|s| s.id.clone()),
        });
    }

    for s in &facts.checkout_sessions {
        let linked_pi = s
            .payment_intent
            .as_deref()
            .is_some_and(|p| ix.pi_is_movement(p));
        let linked_invoice = s.invoice.as_deref().is_some_and(|i| ix.invoice_counted(i));
        if !s.paid || linked_pi || linked_invoice {
            continue;
        }
        out.push(Movement {
            source: MovementSource::CheckoutSession,
            id: s.id.clone(),
            email: ix
                .customer_email(s.customer.as_deref())
                .or_else(|| s.email.clone()),
            customer_id: s.customer.clone(),
            currency: s.currency.clone(),
            gross: s.amount_total,
            refunded: 0,
            refunds: Vec::new(),
            occurred_at: s.created,
            invoice: s.invoice.clone(),
            checkout_session: Some(s.id.clone()),
        });
    }

    // Refunds subtract from the movement they refund, in the movement's currency only.
    let position: HashMap<(MovementSource, String), usize> = out
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.source, m.id.clone()), i))
        .collect();
    let mut seen_refunds = HashSet::new();
    let mut refunds: Vec<&RefundFact> = facts.refunds.iter().filter(|r| r.succeeded).collect();
    refunds.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    for r in refunds {
        if !seen_refunds.insert(r.id.as_str()) {
            continue;
        }
        let target = r
            .payment_intent
            .as_deref()
            .filter(|p| ix.pi_is_movement(p))
            .map(|p| (MovementSource::PaymentIntent, p))
            .or_else(|| r.charge.as_deref().and_then(|c| ix.movement_of_charge(c)));
        let Some(&i) = target.and_then(|(src, id)| position.get(&(src, id.to_owned()))) else {
            continue;
        };
        let m = &mut out[i];
        if m.currency != r.currency {
            continue;
        }
        m.refunded = m.refunded.saturating_add(r.amount);
        m.refunds.push(AppliedRefund {
            id: r.id.clone(),
            amount: r.amount,
            created: r.created,
        });
    }

    out.sort_by(|a, b| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)));
    out
}

/// Totals per normalised email; movements without any email are left out (nobody to show them
/// against). Totals are per currency, never mixed.
pub fn summarise(movements: &[Movement]) -> BTreeMap<Email, EmailSpend> {
    /// Per currency: (gross, refunded).
    type Totals = BTreeMap<Currency, (i64, i64)>;
    let mut by_email: BTreeMap<Email, (EmailSpend, Totals)> = BTreeMap::new();
    for m in movements {
        let Some(email) = &m.email else { continue };
        let (row, totals) = by_email.entry(email.clone()).or_insert_with(|| {
            (
                EmailSpend {
                    email: email.clone(),
                    customer_ids: BTreeSet::new(),
                    totals: Vec::new(),
                    order_count: 0,
                    first_purchase_at: m.occurred_at,
                    last_purchase_at: m.occurred_at,
                },
                BTreeMap::new(),
            )
        });
        row.customer_ids.extend(m.customer_id.clone());
        row.order_count += 1;
        row.first_purchase_at = row.first_purchase_at.min(m.occurred_at);
        row.last_purchase_at = row.last_purchase_at.max(m.occurred_at);
        let t = totals.entry(m.currency.clone()).or_default();
        // Saturating: amounts come from events a tenant can sign for its own endpoint.
        t.0 = t.0.saturating_add(m.gross);
        t.1 = t.1.saturating_add(m.refunded);
    }
    by_email
        .into_iter()
        .map(|(email, (mut row, totals))| {
            row.totals = totals
                .into_iter()
                .map(|(currency, (gross, refunded))| SpendTotal {
                    currency,
                    gross,
                    refunded,
                    net: gross.saturating_sub(refunded),
                })
                .collect();
            (email, row)
        })
        .collect()
}

#[cfg(test)]
mod tests;
