//! Deterministic generation of realistic connected accounts.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::Scale;
use crate::rng::Rng;
use crate::store::{Account, EVENT_RETENTION_SECONDS, Kind};
use crate::templates::{self as t, set, set_path};

pub const DAY: i64 = 86_400;

const FIRST: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Mia", "James",
    "Amelia", "Lucas", "Harper", "Mateo", "Yuki", "Hiro", "Chloé", "Jonas", "Aisha", "Ravi",
    "Lena", "Marco", "Sofia", "Kenji",
];
const LAST: &[&str] = &[
    "Smith", "Johnson", "Garcia", "Brown", "Müller", "Rossi", "Tanaka", "Sato", "Dubois", "Novak",
    "Kowalski", "Silva", "Patel", "Nguyen", "Kim", "Larsen", "Costa", "Fischer", "Moreau",
    "Walker",
];
const DOMAINS: &[&str] = &[
    "example.com",
    "mail.test",
    "inbox.example",
    "corp.example.org",
    "fastmail.test",
];
const BUSINESSES: &[&str] = &[
    "Acme Yoga Studio",
    "Northwind Coffee",
    "Blue Fern Design",
    "Kumo Ramen",
    "Atlas Fitness",
    "Lumen Books",
    "Harbor Dental",
    "Pixel Forge",
    "Green Leaf Market",
    "Summit Climbing Gym",
];
const PRODUCTS: &[&str] = &[
    "Starter plan",
    "Pro plan",
    "Team plan",
    "Enterprise plan",
    "Drop-in class",
    "10-class pass",
    "Workshop",
    "T-shirt",
    "Coffee beans 1kg",
    "Gift card",
    "Consulting hour",
    "Annual membership",
    "Weekly box",
    "Daily pass",
    "E-book",
    "Mug",
    "Onboarding package",
    "Support add-on",
    "Storage add-on",
    "Seat",
];

/// `(customers, products, history days)` per scale.
fn scale_params(scale: Scale) -> (usize, usize, i64) {
    match scale {
        Scale::Empty => (0, 0, 0),
        Scale::Small => (40, 6, 400),
        Scale::Medium => (950, 24, 730),
        Scale::Bench => (8_000, 60, 1_095),
    }
}

// ---- calendar helpers (proleptic Gregorian, UTC) ----

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn add_months(ts: i64, n: i64) -> i64 {
    let days = ts.div_euclid(DAY);
    let secs = ts.rem_euclid(DAY);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + n;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let dim = days_from_civil(
        if nm == 12 { ny + 1 } else { ny },
        if nm == 12 { 1 } else { nm + 1 },
        1,
    ) - days_from_civil(ny, nm, 1);
    days_from_civil(ny, nm, d.min(dim)) * DAY + secs
}

/// The end of one billing period that starts at `ts`.
pub fn add_interval(ts: i64, interval: &str, count: i64) -> i64 {
    match interval {
        "day" => ts + DAY * count,
        "week" => ts + 7 * DAY * count,
        "year" => add_months(ts, 12 * count),
        _ => add_months(ts, count),
    }
}

fn approx_len(interval: &str, count: i64) -> i64 {
    match interval {
        "day" => DAY * count,
        "week" => 7 * DAY * count,
        "year" => 365 * DAY * count,
        _ => 30 * DAY * count,
    }
}

pub fn zero_decimal(currency: &str) -> bool {
    matches!(currency, "jpy" | "krw" | "vnd" | "clp" | "isk" | "huf_zero")
}

#[derive(Debug, Clone)]
pub struct PriceInfo {
    pub id: String,
    pub product: String,
    pub product_name: String,
    pub unit_amount: i64,
    pub currency: String,
    pub interval: Option<(String, i64)>,
    pub json: Value,
}

#[derive(Debug, Clone)]
struct Cust {
    id: String,
    email: String,
    name: String,
    created: i64,
    currency: String,
    deleted: bool,
}

/// Generates objects into `acct`; `seed` is the account's data seed, `anchor` the moment
/// "now" for the generated history (every `created` is at or before it).
#[derive(Debug)]
pub struct Gen<'a> {
    pub r: Rng,
    pub a: &'a mut Account,
    pub anchor: i64,
    pub currencies: Vec<(String, u32)>,
    pub onetime: HashMap<String, Vec<PriceInfo>>,
    pub recurring: HashMap<String, Vec<PriceInfo>>,
    pub coupons: Vec<(String, f64)>,
    invoice_seq: u64,
    emails: Vec<String>,
}

pub fn account_object(id: &str, name: &str, created: i64, currency: &str, email: &str) -> Value {
    let mut a = t::account();
    set(
        &mut a,
        vec![
            ("id", json!(id)),
            ("created", json!(created)),
            ("default_currency", json!(currency)),
            ("email", json!(email)),
            ("charges_enabled", json!(true)),
            ("payouts_enabled", json!(true)),
            ("details_submitted", json!(true)),
            ("business_type", json!("company")),
            (
                "controller",
                json!({"is_controller": false, "type": "account"}),
            ),
            (
                "country",
                json!(match currency {
                    "eur" => "DE",
                    "gbp" => "GB",
                    "jpy" => "JP",
                    _ => "US",
                }),
            ),
        ],
    );
    set_path(&mut a, &["business_profile", "name"], json!(name));
    set_path(&mut a, &["business_profile", "support_email"], json!(email));
    set_path(
        &mut a,
        &["settings", "dashboard", "display_name"],
        json!(name),
    );
    set_path(
        &mut a,
        &["external_accounts", "url"],
        json!(format!("/v1/accounts/{id}/external_accounts")),
    );
    set_path(&mut a, &["requirements", "currently_due"], json!([]));
    set_path(&mut a, &["requirements", "eventually_due"], json!([]));
    set_path(&mut a, &["requirements", "disabled_reason"], Value::Null);
    a
}

/// Creates a generated account (id, name and data all follow from `seed` and `index`).
pub fn generate_account(
    seed: u64,
    index: usize,
    id: Option<String>,
    name: Option<String>,
    scale: Scale,
    anchor: i64,
) -> Account {
    let mut r = Rng::derive(seed, &format!("account:{index}"));
    let id = id.unwrap_or_else(|| r.id("acct_1", 15));
    let name = name.unwrap_or_else(|| {
        let base = BUSINESSES[index % BUSINESSES.len()];
        if index < BUSINESSES.len() {
            base.to_string()
        } else {
            format!("{base} {}", index / BUSINESSES.len() + 1)
        }
    });
    let default_currency = ["usd", "usd", "eur", "gbp", "usd"][index % 5];
    let slug: String = name
        .to_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let (_, _, history) = scale_params(scale);
    let created = anchor - (history + 30 + r.range(0, 300)) * DAY;
    let object = account_object(
        &id,
        &name,
        created,
        default_currency,
        &format!("owner@{slug}.example"),
    );
    let mut acct = Account::new(id.clone(), name, object, seed);
    let data_rng = Rng::derive(seed, &format!("data:{id}"));
    let mut g = Gen::new(data_rng, &mut acct, anchor, default_currency);
    g.populate(scale);
    acct
}

impl<'a> Gen<'a> {
    pub fn new(r: Rng, a: &'a mut Account, anchor: i64, default_currency: &str) -> Self {
        let others: Vec<&str> = ["usd", "eur", "gbp"]
            .into_iter()
            .filter(|c| *c != default_currency)
            .collect();
        let currencies = vec![
            (default_currency.to_string(), 75),
            (others[0].to_string(), 13),
            ("jpy".to_string(), 12),
        ];
        Gen {
            r,
            a,
            anchor,
            currencies,
            onetime: HashMap::new(),
            recurring: HashMap::new(),
            coupons: Vec::new(),
            invoice_seq: 0,
            emails: Vec::new(),
        }
    }

    /// Rebuilds the price catalogue and coupons from what the account already holds (used by
    /// `mutate` on accounts that were generated or seeded earlier).
    pub fn load_catalogue(&mut self) {
        for id in self.a.col(Kind::Price).live_ids() {
            let Some(p) = self.a.col(Kind::Price).value(&id) else {
                continue;
            };
            if p["active"] != json!(true) {
                continue;
            }
            let info = price_info(&p, self.a);
            if info.interval.is_some() {
                self.recurring
                    .entry(info.currency.clone())
                    .or_default()
                    .push(info);
            } else {
                self.onetime
                    .entry(info.currency.clone())
                    .or_default()
                    .push(info);
            }
        }
        for (id, c) in &self.a.coupons {
            self.coupons
                .push((id.clone(), c["percent_off"].as_f64().unwrap_or(0.0)));
        }
        self.coupons.sort_by(|a, b| a.0.cmp(&b.0));
        if self.onetime.is_empty() {
            let t = self.anchor - 30 * DAY;
            self.catalogue(2, t);
        }
    }

    fn pick_currency(&mut self) -> String {
        let items = self.currencies.clone();
        self.r.weighted(&items).clone()
    }

    fn scale_amount(&mut self, cents: i64, currency: &str) -> i64 {
        if zero_decimal(currency) {
            (cents * 150 / 100 / 10).max(1) * 10
        } else {
            cents
        }
    }

    pub fn populate(&mut self, scale: Scale) {
        let (n_customers, n_products, history) = scale_params(scale);
        if n_customers == 0 {
            return;
        }
        let start = self.anchor - history * DAY;
        self.catalogue(n_products, start - 20 * DAY);
        let mut customers: Vec<Cust> = Vec::with_capacity(n_customers);
        for i in 0..n_customers {
            let u = self.r.unit();
            let created = start + ((history * DAY - 3_600) as f64 * u.powf(0.7)) as i64;
            let c = self.customer(i, created, &customers);
            customers.push(c.clone());
            self.activity(i, &c);
        }
        // Guest checkouts: no customer object, only the email on the session.
        for i in 0..n_customers / 4 {
            let t = self.r.range(start, self.anchor - 60);
            let currency = self.pick_currency();
            let email = if i % 5 == 0 && !customers.is_empty() {
                customers[self.r.below(customers.len() as u64) as usize]
                    .email
                    .clone()
            } else {
                self.email()
            };
            let name = self.person();
            self.payment_session(t, &currency, None, &email, &name, i % 7 == 3);
        }
        self.creation_events();
    }

    fn person(&mut self) -> String {
        format!("{} {}", self.r.pick(FIRST), self.r.pick(LAST))
    }

    fn email(&mut self) -> String {
        let n = self.r.below(10_000);
        format!(
            "{}.{}{}@{}",
            self.r.pick(FIRST),
            self.r.pick(LAST),
            n,
            self.r.pick(DOMAINS)
        )
        .to_lowercase()
        .replace(['é', 'ü'], "e")
    }

    pub fn catalogue(&mut self, n_products: usize, t0: i64) {
        let coupon_t = t0;
        for (cid, pct) in [("SAVE20", 20.0), ("FRIENDS10", 10.0)] {
            let c = json!({
                "id": cid, "object": "coupon", "amount_off": null, "created": coupon_t, "currency": null,
                "duration": "forever", "duration_in_months": null, "livemode": false, "max_redemptions": null,
                "metadata": {}, "name": format!("{pct}% off"), "percent_off": pct, "redeem_by": null,
                "times_redeemed": 0, "valid": true,
            });
            self.a.coupons.insert(cid.to_string(), c);
            self.coupons.push((cid.to_string(), pct));
        }
        let intervals: &[((&str, i64), u32)] = &[
            (("month", 1), 55),
            (("year", 1), 18),
            (("month", 3), 8),
            (("week", 1), 8),
            (("month", 6), 4),
            (("day", 7), 4),
            (("week", 2), 3),
        ];
        let currencies: Vec<String> = self.currencies.iter().map(|c| c.0.clone()).collect();
        for i in 0..n_products.max(2) {
            let created = t0 + self.r.range(0, 10 * DAY);
            let pid = self.r.id("prod_", 14);
            let name = if i < PRODUCTS.len() {
                PRODUCTS[i].to_string()
            } else {
                format!(
                    "{} {}",
                    PRODUCTS[i % PRODUCTS.len()],
                    i / PRODUCTS.len() + 1
                )
            };
            let recurring = i % 2 == 0;
            let (interval, count) = if recurring {
                *self.r.weighted(intervals)
            } else {
                ("", 0)
            };
            let base_cents =
                [500, 900, 1_500, 1_999, 2_900, 4_900, 9_900, 19_900][self.r.below(8) as usize];
            let mut default_price = Value::Null;
            for currency in &currencies {
                let price_id = self.r.id("price_1", 23);
                let amount = self.scale_amount(base_cents, currency);
                let mut p = t::price();
                set(
                    &mut p,
                    vec![
                        ("id", json!(price_id)),
                        ("created", json!(created)),
                        ("currency", json!(currency)),
                        ("product", json!(pid)),
                        ("unit_amount", json!(amount)),
                        ("unit_amount_decimal", json!(amount.to_string())),
                        (
                            "type",
                            json!(if recurring { "recurring" } else { "one_time" }),
                        ),
                        (
                            "nickname",
                            if recurring {
                                json!(format!("{name} ({interval})"))
                            } else {
                                Value::Null
                            },
                        ),
                        (
                            "recurring",
                            if recurring {
                                json!({"interval": interval, "interval_count": count, "meter": null, "usage_type": "licensed", "trial_period_days": null})
                            } else {
                                Value::Null
                            },
                        ),
                    ],
                );
                if default_price.is_null() {
                    default_price = json!(price_id);
                }
                self.a.put(Kind::Price, &p);
                let info = PriceInfo {
                    id: price_id,
                    product: pid.clone(),
                    product_name: name.clone(),
                    unit_amount: amount,
                    currency: currency.clone(),
                    interval: recurring.then(|| (interval.to_string(), count)),
                    json: p,
                };
                let map = if recurring {
                    &mut self.recurring
                } else {
                    &mut self.onetime
                };
                map.entry(currency.clone()).or_default().push(info);
            }
            let mut p = t::product();
            set(
                &mut p,
                vec![
                    ("id", json!(pid)),
                    ("created", json!(created)),
                    ("updated", json!(created)),
                    ("name", json!(name)),
                    (
                        "description",
                        json!(format!("{name} — generated by the Tributary simulator")),
                    ),
                    ("default_price", default_price),
                    ("type", json!("service")),
                ],
            );
            self.a.put(Kind::Product, &p);
        }
        // One product that was deleted (no prices, as Stripe requires).
        let mut p = t::product();
        let pid = self.r.id("prod_", 14);
        set(
            &mut p,
            vec![
                ("id", json!(pid)),
                ("created", json!(t0)),
                ("updated", json!(t0)),
                ("name", json!("Discontinued item")),
            ],
        );
        self.a.put(Kind::Product, &p);
        self.a.put(
            Kind::Product,
            &json!({"id": pid, "object": "product", "deleted": true}),
        );
    }

    fn customer(&mut self, i: usize, created: i64, earlier: &[Cust]) -> Cust {
        let id = self.r.id("cus_", 14);
        let name = self.person();
        // Duplicates share an email, in another case or with stray whitespace.
        let email = if (i == 7 || self.r.chance(0.04)) && !earlier.is_empty() {
            let e = &earlier[self.r.below(earlier.len() as u64) as usize].email;
            match self.r.below(3) {
                0 => e.to_uppercase(),
                1 => format!(" {e} "),
                _ => e.clone(),
            }
        } else {
            self.email()
        };
        self.emails.push(email.clone());
        let currency = if i == 9 {
            "jpy".to_string()
        } else {
            self.pick_currency()
        };
        let deleted = i == 6 || (i > 12 && self.r.chance(0.03));
        let mut c = t::customer();
        let prefix = self.r.alnum(8).to_uppercase();
        set(
            &mut c,
            vec![
                ("id", json!(id)),
                ("created", json!(created)),
                ("email", json!(email)),
                ("name", json!(name)),
                ("currency", json!(currency)),
                ("invoice_prefix", json!(prefix)),
                ("preferred_locales", json!(["en"])),
                (
                    "phone",
                    if self.r.chance(0.3) {
                        json!(format!("+1555{:07}", self.r.below(10_000_000)))
                    } else {
                        Value::Null
                    },
                ),
            ],
        );
        self.a.put(Kind::Customer, &c);
        Cust {
            id,
            email,
            name,
            created,
            currency,
            deleted,
        }
    }

    fn activity(&mut self, i: usize, c: &Cust) {
        let n_payments = match i {
            10 | 11 => 1,
            _ => *self
                .r
                .weighted(&[(0usize, 30), (1, 40), (2, 18), (3, 8), (5, 4)]),
        };
        for k in 0..n_payments {
            let t = self.r.range(c.created, self.anchor - 60);
            let refund = match i {
                10 if k == 0 => Some(true),
                11 if k == 0 => Some(false),
                _ => None,
            };
            let expired = i > 12 && self.r.chance(0.05);
            if expired {
                self.expired_session(t, &c.currency, Some(&c.id), &c.email);
            } else {
                let (_, _, ch) =
                    self.payment_session(t, &c.currency, Some(&c.id), &c.email, &c.name, false);
                if let Some(full) = refund {
                    self.refund(&ch, t + DAY, Some(full));
                }
            }
        }
        let forced = match i {
            0 => Some("active"),
            1 => Some("canceled"),
            2 => Some("past_due"),
            3 => Some("trialing"),
            9 => Some("active"),
            _ => None,
        };
        if forced.is_some() || self.r.chance(0.35) {
            self.subscription(c, forced);
        }
        if i == 4 || i == 5 || (i > 12 && self.r.chance(0.08)) {
            let t = self.r.range(c.created, self.anchor - 60);
            let status = match i {
                4 => "oob",
                5 => "card",
                _ => *self.r.weighted(&[
                    ("oob", 35),
                    ("card", 35),
                    ("open", 15),
                    ("void", 10),
                    ("uncollectible", 5),
                ]),
            };
            let n_lines = if i == 5 || self.r.chance(0.05) {
                self.r.range(11, 26) as usize
            } else {
                self.r.range(1, 5) as usize
            };
            self.one_off_invoice(c, t, status, n_lines);
        }
        if i == 8 || (i > 12 && self.r.chance(0.02)) {
            let t = self.r.range(c.created, self.anchor - 60);
            let amount = self.scale_amount(2_500, &c.currency);
            self.charge(
                t,
                amount,
                &c.currency,
                Some(&c.id),
                None,
                &c.email,
                &c.name,
                true,
                "Legacy charge",
            );
        }
        if c.deleted {
            self.a.put(
                Kind::Customer,
                &json!({"id": c.id, "object": "customer", "deleted": true}),
            );
        }
    }

    fn pick_onetime(&mut self, currency: &str) -> Option<PriceInfo> {
        let list = self.onetime.get(currency)?;
        if list.is_empty() {
            return None;
        }
        let i = self.r.below(list.len() as u64) as usize;
        Some(list[i].clone())
    }

    fn item_json(&mut self, p: &PriceInfo, qty: i64, discount: i64) -> Value {
        let mut it = t::item();
        let sub = p.unit_amount * qty;
        set(
            &mut it,
            vec![
                ("id", json!(self.r.id("li_1", 23))),
                ("amount_discount", json!(discount)),
                ("amount_subtotal", json!(sub)),
                ("amount_tax", json!(0)),
                ("amount_total", json!(sub - discount)),
                ("currency", json!(p.currency)),
                ("description", json!(p.product_name)),
                ("price", p.json.clone()),
                ("quantity", json!(qty)),
            ],
        );
        it
    }

    fn quantity(&mut self) -> i64 {
        *self
            .r
            .weighted(&[(1i64, 80), (2, 8), (3, 5), (5, 4), (10, 3)])
    }

    /// A completed payment-mode checkout session with its payment intent and charge.
    /// Returns (payment intent id, charge id).
    pub fn payment_session(
        &mut self,
        t: i64,
        currency: &str,
        customer: Option<&str>,
        email: &str,
        name: &str,
        client_ref: bool,
    ) -> (String, String, String) {
        let n_items = *self.r.weighted(&[(1usize, 70), (2, 20), (3, 10)]);
        let mut items = Vec::new();
        let mut total = 0;
        for _ in 0..n_items {
            let Some(p) = self.pick_onetime(currency) else {
                continue;
            };
            let q = self.quantity();
            let it = self.item_json(&p, q, 0);
            total += p.unit_amount * q;
            items.push(it);
        }
        let cs_id = self.r.id("cs_test_a1", 56);
        let desc = items
            .first()
            .and_then(|i| i["description"].as_str())
            .unwrap_or("Order")
            .to_string();
        let refund_roll = self.r.unit();
        let (pi, ch) = self.payment(t + 5, total, currency, customer, email, name, true, &desc);
        let mut s = self.session_base(&cs_id, t, currency, customer, email, name, "payment");
        set(
            &mut s,
            vec![
                ("amount_subtotal", json!(total)),
                ("amount_total", json!(total)),
                ("payment_intent", json!(pi)),
                ("payment_status", json!("paid")),
                ("status", json!("complete")),
                (
                    "customer_creation",
                    if customer.is_none() {
                        json!("if_required")
                    } else {
                        Value::Null
                    },
                ),
                (
                    "client_reference_id",
                    if client_ref {
                        json!(format!("order-{}", self.r.below(1_000_000)))
                    } else {
                        Value::Null
                    },
                ),
            ],
        );
        self.a.put(Kind::CheckoutSession, &s);
        self.a.set_children(Kind::CheckoutSession, &cs_id, items);
        if refund_roll < 0.08 {
            let full = refund_roll < 0.05;
            let when = t + self.r.range(DAY, 20 * DAY);
            self.refund(&ch, when, Some(full));
        }
        (cs_id, pi, ch)
    }

    fn expired_session(&mut self, t: i64, currency: &str, customer: Option<&str>, email: &str) {
        let Some(p) = self.pick_onetime(currency) else {
            return;
        };
        let it = self.item_json(&p, 1, 0);
        let cs_id = self.r.id("cs_test_a1", 56);
        let mut s = self.session_base(&cs_id, t, currency, customer, email, "", "payment");
        set(
            &mut s,
            vec![
                ("amount_subtotal", json!(p.unit_amount)),
                ("amount_total", json!(p.unit_amount)),
                ("payment_status", json!("unpaid")),
                ("status", json!("expired")),
                ("customer_details", Value::Null),
                ("customer_email", json!(email)),
            ],
        );
        self.a.put(Kind::CheckoutSession, &s);
        self.a.set_children(Kind::CheckoutSession, &cs_id, vec![it]);
    }

    #[allow(clippy::too_many_arguments)]
    fn session_base(
        &mut self,
        id: &str,
        t: i64,
        currency: &str,
        customer: Option<&str>,
        email: &str,
        name: &str,
        mode: &str,
    ) -> Value {
        let mut s = t::checkout_session();
        set(
            &mut s,
            vec![
                ("id", json!(id)),
                ("created", json!(t)),
                ("expires_at", json!(t + DAY)),
                ("currency", json!(currency)),
                ("customer", json!(customer)),
                (
                    "customer_details",
                    json!({
                        "address": {"city": null, "country": "US", "line1": null, "line2": null, "postal_code": "94107", "state": null},
                        "email": email, "name": if name.is_empty() { Value::Null } else { json!(name) }, "phone": null,
                        "tax_exempt": "none", "tax_ids": [], "business_name": null, "individual_name": null,
                    }),
                ),
                ("mode", json!(mode)),
                ("payment_intent", Value::Null),
                ("subscription", Value::Null),
                ("invoice", Value::Null),
                ("url", Value::Null),
                (
                    "success_url",
                    json!("https://shop.example/success?session_id={CHECKOUT_SESSION_ID}"),
                ),
                ("cancel_url", json!("https://shop.example/cancel")),
                ("payment_method_types", json!(["card"])),
                ("payment_method_collection", json!("always")),
                ("billing_address_collection", json!("auto")),
                ("locale", json!("auto")),
                ("ui_mode", json!("hosted")),
                ("custom_fields", json!([])),
                ("shipping_options", json!([])),
            ],
        );
        s
    }

    /// A payment intent and its latest charge. Returns (pi id, charge id).
    #[allow(clippy::too_many_arguments)]
    pub fn payment(
        &mut self,
        t: i64,
        amount: i64,
        currency: &str,
        customer: Option<&str>,
        email: &str,
        name: &str,
        succeed: bool,
        desc: &str,
    ) -> (String, String) {
        let pi_id = self.r.id("pi_3", 23);
        let ch_id = self.charge(
            t + 1,
            amount,
            currency,
            customer,
            Some(&pi_id),
            email,
            name,
            succeed,
            desc,
        );
        let secret = self.r.alnum(25);
        let mut pi = t::payment_intent();
        set(
            &mut pi,
            vec![
                ("id", json!(pi_id)),
                ("created", json!(t)),
                ("amount", json!(amount)),
                ("amount_received", json!(if succeed { amount } else { 0 })),
                ("currency", json!(currency)),
                ("customer", json!(customer)),
                ("description", json!(desc)),
                ("latest_charge", json!(ch_id)),
                ("payment_method", json!(format!("pm_1{}", &ch_id[4..]))),
                (
                    "receipt_email",
                    if customer.is_none() {
                        json!(email)
                    } else {
                        Value::Null
                    },
                ),
                (
                    "status",
                    json!(if succeed {
                        "succeeded"
                    } else {
                        "requires_payment_method"
                    }),
                ),
                ("client_secret", json!(format!("{pi_id}_secret_{secret}"))),
                (
                    "automatic_payment_methods",
                    json!({"allow_redirects": "always", "enabled": true}),
                ),
                (
                    "payment_method_options",
                    json!({"card": {"installments": null, "mandate_options": null, "network": null, "request_three_d_secure": "automatic"}}),
                ),
                (
                    "last_payment_error",
                    if succeed {
                        Value::Null
                    } else {
                        json!({"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "charge": ch_id,
                       "message": "Your card has insufficient funds.", "doc_url": "https://stripe.com/docs/error-codes/card-declined"})
                    },
                ),
            ],
        );
        self.a.put(Kind::PaymentIntent, &pi);
        (pi_id, ch_id)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &mut self,
        t: i64,
        amount: i64,
        currency: &str,
        customer: Option<&str>,
        pi: Option<&str>,
        email: &str,
        name: &str,
        succeed: bool,
        desc: &str,
    ) -> String {
        let ch_id = if pi.is_some() {
            self.r.id("ch_3", 23)
        } else {
            self.r.id("ch_1", 23)
        };
        let brand = *self
            .r
            .weighted(&[("visa", 60), ("mastercard", 30), ("amex", 10)]);
        let last4 = format!("{:04}", self.r.below(10_000));
        let mut c = t::charge();
        set(
            &mut c,
            vec![
                ("id", json!(ch_id)),
                ("created", json!(t)),
                ("amount", json!(amount)),
                ("amount_captured", json!(if succeed { amount } else { 0 })),
                ("amount_refunded", json!(0)),
                (
                    "balance_transaction",
                    if succeed {
                        json!(self.r.id("txn_3", 23))
                    } else {
                        Value::Null
                    },
                ),
                ("captured", json!(succeed)),
                ("currency", json!(currency)),
                ("customer", json!(customer)),
                ("description", json!(desc)),
                ("paid", json!(succeed)),
                ("payment_intent", json!(pi)),
                (
                    "payment_method",
                    json!(if pi.is_some() {
                        format!("pm_1{}", &ch_id[4..])
                    } else {
                        format!("card_1{}", &ch_id[4..])
                    }),
                ),
                ("receipt_email", json!(email)),
                (
                    "receipt_url",
                    json!(format!(
                        "https://pay.stripe.com/receipts/payment/{}",
                        self.r.alnum(40)
                    )),
                ),
                ("refunded", json!(false)),
                (
                    "refunds",
                    json!({"object": "list", "data": [], "has_more": false, "total_count": 0, "url": format!("/v1/charges/{ch_id}/refunds")}),
                ),
                (
                    "status",
                    json!(if succeed { "succeeded" } else { "failed" }),
                ),
                (
                    "failure_code",
                    if succeed {
                        Value::Null
                    } else {
                        json!("card_declined")
                    },
                ),
                (
                    "failure_message",
                    if succeed {
                        Value::Null
                    } else {
                        json!("Your card has insufficient funds.")
                    },
                ),
                ("calculated_statement_descriptor", json!("TRIBUTARY SIM")),
            ],
        );
        set_path(&mut c, &["billing_details", "email"], json!(email));
        set_path(
            &mut c,
            &["billing_details", "name"],
            if name.is_empty() {
                Value::Null
            } else {
                json!(name)
            },
        );
        set_path(
            &mut c,
            &["payment_method_details", "card", "brand"],
            json!(brand),
        );
        set_path(
            &mut c,
            &["payment_method_details", "card", "network"],
            json!(brand),
        );
        set_path(
            &mut c,
            &["payment_method_details", "card", "last4"],
            json!(last4),
        );
        set_path(
            &mut c,
            &["payment_method_details", "card", "amount_authorized"],
            json!(amount),
        );
        set_path(
            &mut c,
            &[
                "payment_method_details",
                "card",
                "overcapture",
                "maximum_amount_capturable",
            ],
            json!(amount),
        );
        if !succeed {
            set_path(
                &mut c,
                &["outcome"],
                json!({"advice_code": "try_again_later", "network_advice_code": null, "network_decline_code": "51",
                "network_status": "declined_by_network", "reason": "insufficient_funds", "risk_level": "normal", "risk_score": 40,
                "seller_message": "The bank returned the decline code `insufficient_funds`.", "type": "issuer_declined"}),
            );
        }
        self.a.put(Kind::Charge, &c);
        ch_id
    }

    /// Refunds a charge (`Some(true)` full, `Some(false)` partial, `None` random) at `t`.
    /// Returns the refund and the charge before and after, or None when nothing is refundable.
    pub fn refund(
        &mut self,
        ch_id: &str,
        t: i64,
        full: Option<bool>,
    ) -> Option<(Value, Value, Value)> {
        let t = t.min(self.anchor);
        let before = self.a.col(Kind::Charge).value(ch_id)?;
        let amount = before["amount"].as_i64().unwrap_or(0);
        let refunded = before["amount_refunded"].as_i64().unwrap_or(0);
        if before["status"] != json!("succeeded") || refunded >= amount {
            return None;
        }
        let full = full.unwrap_or_else(|| self.r.chance(0.6));
        let left = amount - refunded;
        let value = if full || left < 2 {
            left
        } else {
            (left / 2).max(1)
        };
        let re_id = self.r.id("re_3", 23);
        let mut re = t::refund();
        set(
            &mut re,
            vec![
                ("id", json!(re_id)),
                ("created", json!(t)),
                ("amount", json!(value)),
                ("balance_transaction", json!(self.r.id("txn_3", 23))),
                ("charge", json!(ch_id)),
                ("currency", before["currency"].clone()),
                ("payment_intent", before["payment_intent"].clone()),
                ("payment_method", before["payment_method"].clone()),
                ("customer", before["customer"].clone()),
                (
                    "reason",
                    json!(*self.r.weighted(&[
                        ("requested_by_customer", 70),
                        ("duplicate", 10),
                        ("fraudulent", 5)
                    ])),
                ),
                ("status", json!("succeeded")),
            ],
        );
        let mut after = before.clone();
        let total_refunded = refunded + value;
        after["amount_refunded"] = json!(total_refunded);
        after["refunded"] = json!(total_refunded >= amount);
        if let Some(list) = after["refunds"]["data"].as_array_mut() {
            list.insert(0, re.clone());
        }
        after["refunds"]["total_count"] =
            json!(after["refunds"]["data"].as_array().map_or(0, Vec::len));
        self.a.put(Kind::Refund, &re);
        self.a.put(Kind::Charge, &after);
        Some((re, before, after))
    }

    fn next_number(&mut self, customer: &str) -> String {
        self.invoice_seq += 1;
        let prefix: String = customer
            .chars()
            .skip(4)
            .take(8)
            .collect::<String>()
            .to_uppercase();
        format!("{prefix}-{:04}", self.invoice_seq % 10_000)
    }

    fn line_json(
        &mut self,
        invoice: &str,
        p: &PriceInfo,
        qty: i64,
        period: (i64, i64),
        sub: Option<(&str, &str)>,
        discount: Option<(&str, i64)>,
    ) -> Value {
        let mut l = t::line_item();
        let amount = p.unit_amount * qty;
        let parent = match sub {
            Some((sub_id, si)) => json!({
                "type": "subscription_item_details",
                "invoice_item_details": null,
                "subscription_item_details": {"invoice_item": null, "proration": false, "proration_details": {"credited_items": null}, "subscription": sub_id, "subscription_item": si},
            }),
            None => json!({
                "type": "invoice_item_details",
                "invoice_item_details": {"invoice_item": self.r.id("ii_1", 23), "proration": false, "proration_details": {"credited_items": null}, "subscription": null},
                "subscription_item_details": null,
            }),
        };
        set(
            &mut l,
            vec![
                ("id", json!(self.r.id("il_1", 23))),
                ("amount", json!(amount)),
                ("currency", json!(p.currency)),
                (
                    "description",
                    json!(if sub.is_some() {
                        format!(
                            "{qty} × {} (at {} / {})",
                            p.product_name,
                            p.unit_amount,
                            p.interval.as_ref().map_or("once", |i| i.0.as_str())
                        )
                    } else {
                        p.product_name.clone()
                    }),
                ),
                (
                    "discount_amounts",
                    match discount {
                        Some((d, a)) => json!([{"amount": a, "discount": d}]),
                        None => json!([]),
                    },
                ),
                (
                    "discounts",
                    match discount {
                        Some((d, _)) => json!([d]),
                        None => json!([]),
                    },
                ),
                ("invoice", json!(invoice)),
                ("period", json!({"start": period.0, "end": period.1})),
                ("quantity", json!(qty)),
                ("subscription", json!(sub.map(|s| s.0))),
                ("parent", parent),
                (
                    "pricing",
                    json!({"type": "price_details", "price_details": {"price": p.id, "product": p.product}, "unit_amount_decimal": p.unit_amount.to_string()}),
                ),
                ("subtotal", json!(amount)),
                ("taxes", json!([])),
                ("pretax_credit_amounts", json!([])),
            ],
        );
        l
    }

    /// Builds an invoice around its lines and stores both. `status` is the invoice status.
    #[allow(clippy::too_many_arguments)]
    pub fn invoice(
        &mut self,
        id: &str,
        c_id: &str,
        c_email: &str,
        c_name: &str,
        t: i64,
        currency: &str,
        lines: Vec<Value>,
        status: &str,
        reason: &str,
        sub: Option<&str>,
        discount: Option<&str>,
        oob: bool,
    ) -> Value {
        let subtotal: i64 = lines
            .iter()
            .map(|l| l["amount"].as_i64().unwrap_or(0))
            .sum();
        let disc: i64 = lines
            .iter()
            .flat_map(|l| {
                l["discount_amounts"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|d| d["amount"].as_i64().unwrap_or(0))
            .sum();
        let total = subtotal - disc;
        let paid = status == "paid";
        let finalized = status != "draft";
        let number = self.next_number(c_id);
        let period = lines.first().map_or((t, t), |l| {
            (
                l["period"]["start"].as_i64().unwrap_or(t),
                l["period"]["end"].as_i64().unwrap_or(t),
            )
        });
        let mut inv = t::invoice();
        let embedded: Vec<Value> = lines.iter().take(10).cloned().collect();
        set(
            &mut inv,
            vec![
                ("id", json!(id)),
                ("created", json!(t)),
                ("account_name", json!(self.a.name)),
                ("account_country", self.a.object["country"].clone()),
                ("amount_due", json!(total)),
                ("amount_paid", json!(if paid { total } else { 0 })),
                (
                    "amount_remaining",
                    json!(if paid || status == "void" { 0 } else { total }),
                ),
                (
                    "attempt_count",
                    json!(if status == "open" && sub.is_some() {
                        2
                    } else if paid {
                        1
                    } else {
                        0
                    }),
                ),
                (
                    "attempted",
                    json!(paid || (status == "open" && sub.is_some())),
                ),
                ("auto_advance", json!(status == "open")),
                ("billing_reason", json!(reason)),
                (
                    "collection_method",
                    json!(if oob || (sub.is_none() && status != "paid") {
                        "send_invoice"
                    } else {
                        "charge_automatically"
                    }),
                ),
                ("currency", json!(currency)),
                ("customer", json!(c_id)),
                ("customer_email", json!(c_email)),
                ("customer_name", json!(c_name)),
                (
                    "discounts",
                    match discount {
                        Some(d) => json!([d]),
                        None => json!([]),
                    },
                ),
                (
                    "due_date",
                    if sub.is_none() {
                        json!(t + 30 * DAY)
                    } else {
                        Value::Null
                    },
                ),
                (
                    "effective_at",
                    if finalized {
                        json!(t + 3_600)
                    } else {
                        Value::Null
                    },
                ),
                (
                    "ending_balance",
                    if finalized { json!(0) } else { Value::Null },
                ),
                (
                    "hosted_invoice_url",
                    if finalized {
                        json!(format!("https://invoice.stripe.com/i/{}", &id[3..]))
                    } else {
                        Value::Null
                    },
                ),
                (
                    "invoice_pdf",
                    if finalized {
                        json!(format!("https://pay.stripe.com/invoice/{}/pdf", &id[3..]))
                    } else {
                        Value::Null
                    },
                ),
                (
                    "number",
                    if finalized {
                        json!(number)
                    } else {
                        Value::Null
                    },
                ),
                (
                    "parent",
                    match sub {
                        Some(s) => {
                            json!({"type": "subscription_details", "quote_details": null, "subscription_details": {"metadata": {}, "subscription": s}})
                        }
                        None => Value::Null,
                    },
                ),
                ("period_start", json!(period.0)),
                ("period_end", json!(period.1)),
                ("status", json!(status)),
                (
                    "status_transitions",
                    json!({
                        "finalized_at": if finalized { json!(t + 3_600) } else { Value::Null },
                        "marked_uncollectible_at": if status == "uncollectible" { json!(t + 40 * DAY) } else { Value::Null },
                        "paid_at": if paid { json!(t + 3_600) } else { Value::Null },
                        "voided_at": if status == "void" { json!(t + 10 * DAY) } else { Value::Null },
                    }),
                ),
                ("subtotal", json!(subtotal)),
                ("subtotal_excluding_tax", json!(subtotal)),
                ("total", json!(total)),
                ("total_excluding_tax", json!(total)),
                (
                    "total_discount_amounts",
                    match discount {
                        Some(d) => json!([{"amount": disc, "discount": d}]),
                        None => json!([]),
                    },
                ),
                ("total_taxes", json!([])),
                ("total_pretax_credit_amounts", json!([])),
                ("webhooks_delivered_at", json!(t)),
                (
                    "next_payment_attempt",
                    if status == "open" && sub.is_some() {
                        json!(t + 3 * DAY)
                    } else {
                        Value::Null
                    },
                ),
                (
                    "lines",
                    json!({"object": "list", "data": embedded, "has_more": lines.len() > 10, "total_count": lines.len(), "url": format!("/v1/invoices/{id}/lines")}),
                ),
            ],
        );
        self.a.put(Kind::Invoice, &inv);
        self.a.set_children(Kind::Invoice, id, lines);
        inv
    }

    /// Pays an invoice by card: invoice payment → payment intent → charge. Returns the
    /// invoice payment.
    #[allow(clippy::too_many_arguments)]
    pub fn invoice_payment(
        &mut self,
        inv_id: &str,
        t: i64,
        amount: i64,
        currency: &str,
        c_id: &str,
        email: &str,
        name: &str,
        succeed: bool,
        desc: &str,
    ) -> (Value, String, String) {
        let (pi, ch) = self.payment(t, amount, currency, Some(c_id), email, name, succeed, desc);
        let mut ip = t::invoice_payment();
        set(
            &mut ip,
            vec![
                ("id", json!(self.r.id("inpay_1", 23))),
                ("created", json!(t)),
                (
                    "amount_paid",
                    if succeed { json!(amount) } else { Value::Null },
                ),
                ("amount_requested", json!(amount)),
                ("currency", json!(currency)),
                ("invoice", json!(inv_id)),
                ("is_default", json!(true)),
                ("livemode", json!(false)),
                (
                    "payment",
                    json!({"type": "payment_intent", "payment_intent": pi}),
                ),
                ("status", json!(if succeed { "paid" } else { "open" })),
                (
                    "status_transitions",
                    json!({"canceled_at": null, "paid_at": if succeed { json!(t + 2) } else { Value::Null }}),
                ),
            ],
        );
        self.a.put(Kind::InvoicePayment, &ip);
        (ip, pi, ch)
    }

    fn one_off_invoice(&mut self, c: &Cust, t: i64, status: &str, n_lines: usize) {
        let id = self.r.id("in_1", 23);
        let mut lines = Vec::new();
        for _ in 0..n_lines {
            let Some(p) = self.pick_onetime(&c.currency) else {
                return;
            };
            let q = self.quantity();
            lines.push(self.line_json(&id, &p, q, (t, t), None, None));
        }
        let inv_status = match status {
            "oob" | "card" => "paid",
            s => s,
        };
        let inv = self.invoice(
            &id,
            &c.id,
            &c.email,
            &c.name,
            t,
            &c.currency,
            lines,
            inv_status,
            "manual",
            None,
            None,
            status == "oob",
        );
        if status == "card" {
            let total = inv["total"].as_i64().unwrap_or(0);
            self.invoice_payment(
                &id,
                t + 3_600,
                total,
                &c.currency,
                &c.id,
                &c.email,
                &c.name,
                true,
                &format!("Invoice {}", inv["number"].as_str().unwrap_or("")),
            );
        }
    }

    fn subscription(&mut self, c: &Cust, forced: Option<&str>) {
        let Some(list) = self.recurring.get(&c.currency).cloned() else {
            return;
        };
        if list.is_empty() {
            return;
        }
        let p1 = self.r.pick(&list).clone();
        let (interval, count) = p1.interval.clone().unwrap_or(("month".into(), 1));
        let mut prices = vec![(p1.clone(), self.quantity())];
        if self.r.chance(0.15)
            && let Some(p2) = list
                .iter()
                .find(|p| p.id != p1.id && p.interval == p1.interval)
        {
            prices.push((p2.clone(), 1));
        }
        let status = forced.map(str::to_string).unwrap_or_else(|| {
            self.r
                .weighted(&[
                    ("active", 55),
                    ("canceled", 25),
                    ("past_due", 7),
                    ("trialing", 8),
                ])
                .to_string()
        });
        let status = if c.deleted && status != "canceled" {
            "canceled".to_string()
        } else {
            status
        };
        let plen = approx_len(&interval, count);
        let min_start = (self.anchor - 30 * plen).max(c.created);
        let mut start = self.r.range(min_start, self.anchor - 3_600);
        if status == "trialing" {
            start = self.anchor - self.r.range(DAY, 12 * DAY);
        }
        // Past due needs a paid period before the failed one.
        if status == "past_due" && add_interval(start, &interval, count) >= self.anchor - 3_600 {
            start = self.anchor - 2 * plen - self.r.range(DAY, 20 * DAY);
        }
        if status == "canceled" && start + plen >= self.anchor {
            start = (self.anchor - plen - self.r.range(DAY, 60 * DAY))
                .max(c.created.min(self.anchor - plen - DAY));
        }
        let ended = if status == "canceled" {
            Some(
                self.r
                    .range(start + plen, self.anchor - 60)
                    .max(start + DAY),
            )
        } else {
            None
        };
        let until = ended.unwrap_or(self.anchor);
        let trial_end = (status == "trialing").then_some(start + 14 * DAY);
        let sub_id = self.r.id("sub_1", 23);
        let discount = if self.r.chance(0.12) || forced == Some("active") && c.currency != "jpy" {
            let (coupon, pct) =
                self.coupons[self.r.below(self.coupons.len() as u64) as usize].clone();
            let di = self.r.id("di_1", 23);
            let mut d = t::discount();
            set(
                &mut d,
                vec![
                    ("id", json!(di)),
                    ("customer", json!(c.id)),
                    ("start", json!(start)),
                    ("end", Value::Null),
                    ("subscription", json!(sub_id)),
                    ("source", json!({"coupon": coupon, "type": "coupon"})),
                ],
            );
            self.a.put(Kind::Discount, &d);
            Some((di, pct))
        } else {
            None
        };
        let items: Vec<(PriceInfo, i64, String)> = prices
            .into_iter()
            .map(|(p, q)| {
                let si = self.r.id("si_", 14);
                (p, q, si)
            })
            .collect();
        // Billing periods and their invoices.
        let mut p_start = start;
        let mut invoices: Vec<String> = Vec::new();
        let mut first_invoice_total = 0;
        let mut last_period = (start, add_interval(start, &interval, count));
        let mut n = 0;
        while p_start < until {
            let p_end = if n == 0 && trial_end.is_some() {
                trial_end.unwrap_or(p_start)
            } else {
                add_interval(p_start, &interval, count)
            };
            last_period = (p_start, p_end);
            let inv_id = self.r.id("in_1", 23);
            let trial = n == 0 && trial_end.is_some();
            let mut lines = Vec::new();
            for (p, q, si) in &items {
                let mut pl = p.clone();
                if trial {
                    pl.unit_amount = 0;
                }
                let disc = discount.as_ref().map(|(d, pct)| {
                    (
                        d.as_str(),
                        ((pl.unit_amount * q) as f64 * pct / 100.0).round() as i64,
                    )
                });
                lines.push(self.line_json(
                    &inv_id,
                    &pl,
                    *q,
                    (p_start, p_end),
                    Some((&sub_id, si)),
                    disc.filter(|x| x.1 > 0),
                ));
            }
            let is_last = add_interval(p_start, &interval, count) >= until || p_end >= until;
            let fail = status == "past_due" && is_last && n > 0;
            let inv_status = if fail { "open" } else { "paid" };
            let reason = if n == 0 {
                "subscription_create"
            } else {
                "subscription_cycle"
            };
            let inv = self.invoice(
                &inv_id,
                &c.id,
                &c.email,
                &c.name,
                p_start,
                &c.currency,
                lines,
                inv_status,
                reason,
                Some(&sub_id),
                discount.as_ref().map(|d| d.0.as_str()),
                false,
            );
            let total = inv["total"].as_i64().unwrap_or(0);
            if n == 0 {
                first_invoice_total = total;
            }
            if total > 0 {
                let desc = if n == 0 {
                    "Subscription creation"
                } else {
                    "Subscription update"
                };
                self.invoice_payment(
                    &inv_id,
                    p_start + 3_600,
                    total,
                    &c.currency,
                    &c.id,
                    &c.email,
                    &c.name,
                    !fail,
                    desc,
                );
                if fail {
                    // Smart retries: the first attempt failed, a second is scheduled.
                }
            }
            invoices.push(inv_id);
            n += 1;
            p_start = p_end;
            if n > 60 {
                break;
            }
        }
        // Most subscriptions start from a checkout session.
        if self.r.chance(0.85) {
            let cs_id = self.r.id("cs_test_b1", 56);
            let mut s = self.session_base(
                &cs_id,
                start - 30,
                &c.currency,
                Some(&c.id),
                &c.email,
                &c.name,
                "subscription",
            );
            let sitems: Vec<Value> = items
                .iter()
                .map(|(p, q, _)| {
                    let d = discount.as_ref().map_or(0, |(_, pct)| {
                        ((p.unit_amount * q) as f64 * pct / 100.0).round() as i64
                    });
                    let mut it = self.item_json(p, *q, if trial_end.is_some() { 0 } else { d });
                    if trial_end.is_some() {
                        it["amount_total"] = json!(0);
                        it["amount_subtotal"] = json!(0);
                    }
                    it
                })
                .collect();
            let subtotal: i64 = sitems
                .iter()
                .map(|i| i["amount_subtotal"].as_i64().unwrap_or(0))
                .sum();
            set(
                &mut s,
                vec![
                    ("amount_subtotal", json!(subtotal)),
                    ("amount_total", json!(first_invoice_total)),
                    ("subscription", json!(sub_id)),
                    ("invoice", json!(invoices.first())),
                    (
                        "payment_status",
                        json!(if first_invoice_total == 0 {
                            "no_payment_required"
                        } else {
                            "paid"
                        }),
                    ),
                    ("status", json!("complete")),
                    (
                        "total_details",
                        json!({"amount_discount": subtotal - first_invoice_total, "amount_shipping": 0, "amount_tax": 0}),
                    ),
                ],
            );
            self.a.put(Kind::CheckoutSession, &s);
            self.a.set_children(Kind::CheckoutSession, &cs_id, sitems);
        }
        let item_values: Vec<Value> = items
            .iter()
            .map(|(p, q, si)| {
                let mut it = t::subscription_item();
                let mut plan = t::plan();
                let (iv, ic) = p.interval.clone().unwrap_or(("month".into(), 1));
                set(
                    &mut plan,
                    vec![
                        ("id", json!(p.id)),
                        ("amount", json!(p.unit_amount)),
                        ("amount_decimal", json!(p.unit_amount.to_string())),
                        ("created", p.json["created"].clone()),
                        ("currency", json!(p.currency)),
                        ("interval", json!(iv)),
                        ("interval_count", json!(ic)),
                        ("livemode", json!(false)),
                        ("metadata", json!({})),
                        ("product", json!(p.product)),
                        ("nickname", p.json["nickname"].clone()),
                    ],
                );
                set(
                    &mut it,
                    vec![
                        ("id", json!(si)),
                        ("created", json!(start)),
                        ("price", p.json.clone()),
                        ("plan", plan),
                        ("quantity", json!(q)),
                        ("subscription", json!(sub_id)),
                        ("current_period_start", json!(last_period.0)),
                        ("current_period_end", json!(last_period.1)),
                        ("discounts", json!([])),
                        ("tax_rates", json!([])),
                        ("metadata", json!({})),
                    ],
                );
                it
            })
            .collect();
        let mut s = t::subscription();
        let n_items = item_values.len();
        set(
            &mut s,
            vec![
                ("id", json!(sub_id)),
                ("created", json!(start)),
                ("start_date", json!(start)),
                ("billing_cycle_anchor", json!(trial_end.unwrap_or(start))),
                ("currency", json!(c.currency)),
                ("customer", json!(c.id)),
                ("status", json!(status)),
                ("latest_invoice", json!(invoices.last())),
                (
                    "discounts",
                    match &discount {
                        Some((d, _)) => json!([d]),
                        None => json!([]),
                    },
                ),
                ("trial_start", json!(trial_end.map(|_| start))),
                ("trial_end", json!(trial_end)),
                ("canceled_at", json!(ended)),
                ("ended_at", json!(ended)),
                (
                    "cancellation_details",
                    json!({"comment": null, "feedback": if ended.is_some() { json!("too_expensive") } else { Value::Null }, "reason": if ended.is_some() { json!("cancellation_requested") } else { Value::Null }}),
                ),
                (
                    "items",
                    json!({"object": "list", "data": item_values, "has_more": false, "total_count": n_items, "url": format!("/v1/subscription_items?subscription={sub_id}")}),
                ),
                (
                    "default_payment_method",
                    json!(format!("pm_1{}", self.r.alnum(23))),
                ),
            ],
        );
        self.a.put(Kind::Subscription, &s);
    }

    /// `*.created`-style events for everything created inside the event retention window.
    pub fn creation_events(&mut self) {
        let from = self.anchor - EVENT_RETENTION_SECONDS;
        let kinds = [
            Kind::Product,
            Kind::Price,
            Kind::Customer,
            Kind::CheckoutSession,
            Kind::PaymentIntent,
            Kind::Charge,
            Kind::Refund,
            Kind::Invoice,
            Kind::InvoicePayment,
            Kind::Subscription,
        ];
        let mut pending: Vec<(i64, String, Value)> = Vec::new();
        for k in kinds {
            let col = self.a.col(k);
            let q = crate::store::ListQuery {
                limit: usize::MAX - 1,
                created: crate::store::CreatedRange {
                    min: Some(from),
                    max: None,
                },
                ..Default::default()
            };
            let Ok(page) = col.list(&q) else { continue };
            for j in page.items {
                let Ok(v) = serde_json::from_str::<Value>(&j) else {
                    continue;
                };
                let created = v["created"].as_i64().unwrap_or(from);
                let s = v["status"].as_str().unwrap_or("");
                let typ = match k {
                    Kind::PaymentIntent if s == "succeeded" => "payment_intent.succeeded",
                    Kind::PaymentIntent => "payment_intent.payment_failed",
                    Kind::Charge if s == "succeeded" => "charge.succeeded",
                    Kind::Charge => "charge.failed",
                    Kind::Invoice => match s {
                        "paid" => "invoice.paid",
                        "void" => "invoice.voided",
                        "draft" => "invoice.created",
                        _ => "invoice.finalized",
                    },
                    Kind::InvoicePayment if s == "paid" => "invoice_payment.paid",
                    Kind::CheckoutSession if s == "complete" => "checkout.session.completed",
                    Kind::CheckoutSession => "checkout.session.expired",
                    Kind::Subscription => "customer.subscription.created",
                    _ => "",
                };
                let typ = if typ.is_empty() {
                    format!("{}.created", k.event_prefix())
                } else {
                    typ.to_string()
                };
                pending.push((created, typ, v));
            }
        }
        // Cancellations inside the window.
        for id in self.a.col(Kind::Subscription).live_ids() {
            let Some(v) = self.a.col(Kind::Subscription).value(&id) else {
                continue;
            };
            if let Some(e) = v["ended_at"].as_i64()
                && e >= from
            {
                pending.push((e, "customer.subscription.deleted".into(), v));
            }
        }
        for (created, typ, v) in pending {
            let id = self.a.event_id();
            let event = crate::store::make_event(&id, &self.a.id, &typ, &v, None, created);
            self.a.put(Kind::Event, &event);
        }
    }
}

pub fn price_info(p: &Value, a: &Account) -> PriceInfo {
    let product = p["product"].as_str().unwrap_or_default().to_string();
    let product_name = a
        .col(Kind::Product)
        .value(&product)
        .and_then(|v| v["name"].as_str().map(str::to_string))
        .unwrap_or_else(|| "Item".into());
    PriceInfo {
        id: p["id"].as_str().unwrap_or_default().to_string(),
        product,
        product_name,
        unit_amount: p["unit_amount"].as_i64().unwrap_or(0),
        currency: p["currency"].as_str().unwrap_or("usd").to_string(),
        interval: p["recurring"]["interval"].as_str().map(|i| {
            (
                i.to_string(),
                p["recurring"]["interval_count"].as_i64().unwrap_or(1),
            )
        }),
        json: p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        // 2024-01-31 + 1 month = 2024-02-29
        let jan31 = days_from_civil(2024, 1, 31) * DAY;
        assert_eq!(add_months(jan31, 1), days_from_civil(2024, 2, 29) * DAY);
        assert_eq!(
            add_interval(jan31, "year", 1),
            days_from_civil(2025, 1, 31) * DAY
        );
        assert_eq!(add_interval(jan31, "week", 2), jan31 + 14 * DAY);
    }

    #[test]
    fn same_seed_same_account() {
        let anchor = 1_780_000_000 / DAY * DAY;
        let a = generate_account(42, 0, None, None, Scale::Small, anchor);
        let b = generate_account(42, 0, None, None, Scale::Small, anchor);
        assert_eq!(a.id, b.id);
        for k in crate::store::ALL_KINDS {
            let ia = a.col(k).live_ids();
            assert_eq!(ia, b.col(k).live_ids(), "{k:?}");
            for id in ia.iter().take(50) {
                assert_eq!(
                    a.col(k).get(id).map(|e| e.json.clone()),
                    b.col(k).get(id).map(|e| e.json.clone())
                );
            }
        }
        let c = generate_account(43, 0, None, None, Scale::Small, anchor);
        assert_ne!(a.id, c.id);
    }

    #[test]
    fn small_account_has_the_interesting_cases() {
        let anchor = 1_780_000_000 / DAY * DAY;
        let a = generate_account(1, 0, None, None, Scale::Small, anchor);
        let counts = a.counts();
        let total: u64 = counts
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        assert!(
            (150..1_500).contains(&total),
            "small total {total}: {counts}"
        );
        let subs: Vec<Value> = a
            .col(Kind::Subscription)
            .live_ids()
            .iter()
            .filter_map(|id| a.col(Kind::Subscription).value(id))
            .collect();
        for s in subs.iter().filter(|s| s["status"] == json!("past_due")) {
            let inv = a
                .col(Kind::Invoice)
                .value(s["latest_invoice"].as_str().expect("latest"))
                .expect("invoice");
            assert_eq!(
                inv["status"],
                json!("open"),
                "past-due subscription with a settled latest invoice"
            );
        }
        for s in ["active", "canceled", "past_due", "trialing"] {
            assert!(
                subs.iter().any(|v| v["status"] == json!(s)),
                "no {s} subscription"
            );
        }
        assert!(a.col(Kind::Customer).len_all() > a.col(Kind::Customer).live());
        assert!(a.invoice_lines.values().any(|l| l.len() > 10));
        let charges: Vec<Value> = a
            .col(Kind::Charge)
            .live_ids()
            .iter()
            .filter_map(|id| a.col(Kind::Charge).value(id))
            .collect();
        assert!(charges.iter().any(|c| c["currency"] == json!("jpy")));
        assert!(charges.iter().any(|c| c["payment_intent"].is_null()));
        assert!(charges.iter().any(|c| c["refunded"] == json!(true)));
        assert!(
            charges
                .iter()
                .any(|c| c["refunded"] == json!(false) && c["amount_refunded"].as_i64() > Some(0))
        );
        let sessions: Vec<Value> = a
            .col(Kind::CheckoutSession)
            .live_ids()
            .iter()
            .filter_map(|id| a.col(Kind::CheckoutSession).value(id))
            .collect();
        assert!(
            sessions
                .iter()
                .any(|s| s["customer"].is_null() && s["status"] == json!("complete"))
        );
    }
}
