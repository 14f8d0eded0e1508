//! The `/_sim` control routes and the middleware that counts requests and injects faults.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults::{Action, ConnSocket, FaultConfig};
use crate::generate::{self, DAY, Gen};
use crate::rng::Rng;
use crate::store::{Account, Kind};
use crate::webhooks::{Endpoint, EndpointStats};
use crate::{Scale, Sim, World};

fn bad(msg: impl Into<String>) -> HttpResponse {
    HttpResponse::BadRequest()
        .json(json!({"error": {"type": "invalid_request_error", "message": msg.into()}}))
}

fn not_found(acct: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": {"type": "invalid_request_error", "message": format!("No such simulator account: {acct}")}}))
}

/// Counts every API and OAuth request by route and status, and applies `/_sim/faults`.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let path = req.path().to_string();
    if !(path.starts_with("/v1/") || path.starts_with("/oauth/")) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let Some(sim) = req.app_data::<web::Data<Sim>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let route = format!(
        "{} {}",
        req.method(),
        req.match_pattern().unwrap_or_else(|| path.clone())
    );
    if path != "/oauth/authorize" {
        let key = req
            .headers()
            .get("stripe-account")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("platform")
            .to_string();
        let (latency, action) = sim
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .decide(&key);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fault = match action {
            None => None,
            Some(Action::Reset) => {
                if let Some(sock) = req.conn_data::<ConnSocket>() {
                    crate::faults::reset(sock);
                }
                sim.record(route, "reset");
                return Ok(req.into_response(HttpResponse::new(StatusCode::INTERNAL_SERVER_ERROR)));
            }
            Some(Action::RateLimit) => Some(crate::api::stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
                None,
            )),
            Some(Action::LockTimeout) => Some(crate::api::stripe_error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("lock_timeout"),
                "This object cannot be accessed right now because another API request or Stripe process is currently accessing it. If you see this error intermittently, retry the request. If you see this error frequently and are making multiple concurrent requests to a single object, make your requests serially or at a lower rate.",
                None,
            )),
            Some(Action::ServerError) => Some(crate::api::stripe_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                "An unknown error occurred",
                None,
            )),
        };
        if let Some(res) = fault {
            sim.record(route, res.status().as_str());
            return Ok(req.into_response(res));
        }
    }
    let res = next.call(req).await?.map_into_boxed_body();
    sim.record(route, res.status().as_str());
    Ok(res)
}

fn describe(a: &Account) -> Value {
    json!({"id": a.id, "name": a.name, "status": if a.revoked { "revoked" } else { "connected" }, "counts": a.counts()})
}

async fn list_accounts(sim: web::Data<Sim>) -> HttpResponse {
    let world = sim.read();
    let out: Vec<Value> = world
        .order
        .iter()
        .filter_map(|id| world.account(id))
        .map(describe)
        .collect();
    HttpResponse::Ok().json(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    id: Option<String>,
    name: Option<String>,
    scale: Option<String>,
}

async fn create_account(sim: web::Data<Sim>, body: web::Bytes) -> HttpResponse {
    let req: NewAccount = if body.iter().all(u8::is_ascii_whitespace) {
        NewAccount {
            id: None,
            name: None,
            scale: None,
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad(format!("invalid body: {e}")),
        }
    };
    let scale: Scale = match req.scale.as_deref().map(str::parse).transpose() {
        Ok(s) => s.unwrap_or(Scale::Empty),
        Err(e) => return bad(e),
    };
    if let Some(id) = &req.id
        && (!id.starts_with("acct_") || id.len() < 8)
    {
        return bad("id must look like acct_…");
    }
    let index = {
        let world = sim.read();
        if req
            .id
            .as_ref()
            .is_some_and(|id| world.accounts.contains_key(id))
        {
            return HttpResponse::Conflict().json(
                json!({"error": {"type": "invalid_request_error", "message": "account exists"}}),
            );
        }
        world.order.len()
    };
    let anchor = sim.now() / DAY * DAY;
    let seed = sim.seed;
    let generated = web::block(move || {
        generate::generate_account(seed, index, req.id, req.name, scale, anchor)
    })
    .await;
    let Ok(acct) = generated else {
        return HttpResponse::InternalServerError().finish();
    };
    let mut world = sim.write();
    if world.accounts.contains_key(&acct.id) {
        return HttpResponse::Conflict().json(
            json!({"error": {"type": "invalid_request_error", "message": "account exists"}}),
        );
    }
    let out = describe(&acct);
    world.order.push(acct.id.clone());
    world.accounts.insert(acct.id.clone(), acct);
    HttpResponse::Ok().json(out)
}

fn object_kind(v: &Value) -> Result<&str, String> {
    v.get("object")
        .and_then(Value::as_str)
        .ok_or_else(|| "every object needs an \"object\" field".to_string())
}

fn id_prefix(kind: Kind) -> &'static str {
    match kind {
        Kind::Customer => "cus_",
        Kind::Product => "prod_",
        Kind::Price => "price_1",
        Kind::PaymentIntent => "pi_3",
        Kind::Charge => "ch_3",
        Kind::Refund => "re_3",
        Kind::Invoice => "in_1",
        Kind::InvoicePayment => "inpay_1",
        Kind::CheckoutSession => "cs_test_a1",
        Kind::Subscription => "sub_1",
        Kind::Discount => "di_1",
        Kind::Event => "evt_1",
    }
}

/// Stores objects as given and records `*.created` / `*.updated` / `*.deleted` events.
fn store_objects(
    sim: &Sim,
    world: &mut World,
    acct_id: &str,
    objects: Vec<Value>,
) -> Result<Vec<String>, String> {
    let now = sim.now();
    let mut events = Vec::new();
    {
        let Some(a) = world.accounts.get_mut(acct_id) else {
            return Err(format!("No such simulator account: {acct_id}"));
        };
        for mut v in objects {
            let object = object_kind(&v)?.to_string();
            match object.as_str() {
                "coupon" => {
                    let id = v
                        .get("id")
                        .and_then(Value::as_str)
                        .ok_or("a coupon needs an id")?
                        .to_string();
                    a.coupons.insert(id, v);
                    continue;
                }
                "account" => {
                    if let Some(n) = v.pointer("/business_profile/name").and_then(Value::as_str) {
                        a.name = n.to_string();
                    }
                    v["id"] = json!(a.id);
                    let before = a.object.clone();
                    a.object = v.clone();
                    events.push(a.record_event("account.updated", &v, Some(&before), now));
                    continue;
                }
                "line_item" | "item" => {
                    let (parent_kind, parent) = if object == "line_item" {
                        (
                            Kind::Invoice,
                            v.get("invoice").and_then(Value::as_str).map(str::to_string),
                        )
                    } else {
                        (
                            Kind::CheckoutSession,
                            v.get("checkout_session")
                                .and_then(Value::as_str)
                                .map(str::to_string),
                        )
                    };
                    let parent = parent
                        .ok_or("a line item needs its parent (invoice / checkout_session)")?;
                    let id = match v.get("id").and_then(Value::as_str) {
                        Some(i) => i.to_string(),
                        None => a.rng.id(
                            if object == "line_item" {
                                "il_1"
                            } else {
                                "li_1"
                            },
                            23,
                        ),
                    };
                    v["id"] = json!(id);
                    let mut items: Vec<Value> = a
                        .children(parent_kind, &parent)
                        .map(|l| {
                            l.iter()
                                .filter_map(|(_, j)| serde_json::from_str(j).ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    match items.iter().position(|x| x["id"] == json!(id)) {
                        Some(i) => items[i] = v,
                        None => items.push(v),
                    }
                    a.set_children(parent_kind, &parent, items);
                    continue;
                }
                _ => {}
            }
            let kind = Kind::from_object(&object)
                .ok_or_else(|| format!("unsupported object type: {object}"))?;
            if v.get("id").and_then(Value::as_str).is_none() {
                v["id"] = json!(a.rng.id(id_prefix(kind), 23));
            }
            let id = v["id"].as_str().unwrap_or_default().to_string();
            let previous = a
                .col(kind)
                .get(&id)
                .filter(|e| !e.deleted)
                .and_then(|_| a.col(kind).value(&id));
            if v.get("deleted").and_then(Value::as_bool) == Some(true) {
                let last = previous.clone().unwrap_or_else(|| v.clone());
                a.put(kind, &v);
                if kind != Kind::Event {
                    events.push(a.record_event(
                        &format!("{}.deleted", kind.event_prefix()),
                        &last,
                        None,
                        now,
                    ));
                }
                continue;
            }
            if v.get("created").is_none() {
                v["created"] = match &previous {
                    Some(p) => p["created"].clone(),
                    None => json!(now),
                };
            }
            match kind {
                Kind::Invoice => {
                    if let Some(lines) = v.pointer("/lines/data").and_then(Value::as_array) {
                        a.set_children(Kind::Invoice, &id, lines.clone());
                    }
                }
                Kind::CheckoutSession => {
                    if let Some(items) = v.as_object_mut().and_then(|m| m.remove("line_items")) {
                        let list = items
                            .get("data")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default();
                        a.set_children(Kind::CheckoutSession, &id, list);
                    }
                }
                _ => {}
            }
            a.put(kind, &v);
            if kind == Kind::Event {
                continue;
            }
            let verb = if previous.is_some() {
                "updated"
            } else {
                "created"
            };
            events.push(a.record_event(
                &format!("{}.{verb}", kind.event_prefix()),
                &v,
                previous.as_ref(),
                now,
            ));
        }
    }
    let ids = events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    for e in &events {
        sim.dispatch(world, acct_id, e);
    }
    Ok(ids)
}

async fn post_objects(
    sim: web::Data<Sim>,
    acct: web::Path<String>,
    body: web::Json<Value>,
) -> HttpResponse {
    let objects = match body.into_inner() {
        Value::Array(a) => a,
        o @ Value::Object(_) => vec![o],
        _ => return bad("expected a JSON array of Stripe objects"),
    };
    let n = objects.len();
    let mut world = sim.write();
    if !world.order.contains(&acct) && *acct != world.platform {
        return not_found(&acct);
    }
    match store_objects(&sim, &mut world, &acct, objects) {
        Ok(events) => HttpResponse::Ok().json(json!({"stored": n, "events": events})),
        Err(e) => bad(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MutateReq {
    count: usize,
    #[serde(default)]
    seed: u64,
}

async fn mutate(
    sim: web::Data<Sim>,
    acct: web::Path<String>,
    body: web::Json<MutateReq>,
) -> HttpResponse {
    let now = sim.now();
    let mut world = sim.write();
    if !world.order.contains(&acct) {
        return not_found(&acct);
    }
    let Some(a) = world.accounts.get_mut(acct.as_str()) else {
        return not_found(&acct);
    };
    let currency = a.object["default_currency"]
        .as_str()
        .unwrap_or("usd")
        .to_string();
    let rng = Rng::derive(
        body.seed,
        &format!("mutate:{}:{}", a.id, a.col(Kind::Event).len_all()),
    );
    let mut g = Gen::new(rng, a, now, &currency);
    g.load_catalogue();
    let mut m = Mutator {
        g,
        now,
        events: Vec::new(),
        changes: Vec::new(),
        pools: Default::default(),
    };
    for _ in 0..body.count {
        m.one();
    }
    let Mutator {
        events, changes, ..
    } = m;
    let ids: Vec<String> = events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    for e in &events {
        sim.dispatch(&world, &acct, e);
    }
    HttpResponse::Ok().json(json!({"count": changes.len(), "changes": changes, "events": ids}))
}

#[derive(Default)]
struct Pools {
    subs: Option<Vec<Arc<str>>>,
    charges: Option<Vec<Arc<str>>>,
    open_invoices: Option<Vec<Arc<str>>>,
    customers: Option<Vec<Arc<str>>>,
}

struct Mutator<'a> {
    g: Gen<'a>,
    now: i64,
    events: Vec<Value>,
    changes: Vec<Value>,
    pools: Pools,
}

impl Mutator<'_> {
    fn event(&mut self, typ: &str, obj: &Value, prev: Option<&Value>) {
        let e = self.g.a.record_event(typ, obj, prev, self.now);
        self.events.push(e);
    }

    fn change(&mut self, kind: &str, object: &Value) {
        self.changes
            .push(json!({"kind": kind, "object": object["object"], "id": object["id"]}));
    }

    fn take(r: &mut Rng, pool: &mut Vec<Arc<str>>) -> Option<Arc<str>> {
        if pool.is_empty() {
            return None;
        }
        let i = r.below(pool.len() as u64) as usize;
        Some(pool.swap_remove(i))
    }

    fn one(&mut self) {
        let what = *self.g.r.weighted(&[
            ("cancel", 18),
            ("refund", 18),
            ("pay", 14),
            ("email", 14),
            ("delete", 8),
            ("payment", 28),
        ]);
        let done = match what {
            "cancel" => self.cancel(),
            "refund" => self.refund(),
            "pay" => self.pay(),
            "email" => self.email(),
            "delete" => self.delete(),
            _ => false,
        };
        if !done {
            self.new_payment();
        }
    }

    fn cancel(&mut self) -> bool {
        let a = &*self.g.a;
        let pool = self.pools.subs.get_or_insert_with(|| {
            let c = a.col(Kind::Subscription);
            let mut v = c.ids_where(1, "active");
            v.extend(c.ids_where(1, "past_due"));
            v.extend(c.ids_where(1, "trialing"));
            v
        });
        let Some(id) = Self::take(&mut self.g.r, pool) else {
            return false;
        };
        let Some(before) = self.g.a.col(Kind::Subscription).value(&id) else {
            return false;
        };
        let mut after = before.clone();
        if self.g.r.chance(0.3) && before["cancel_at_period_end"] != json!(true) {
            let end = before
                .pointer("/items/data/0/current_period_end")
                .cloned()
                .unwrap_or(json!(self.now + 30 * DAY));
            after["cancel_at_period_end"] = json!(true);
            after["cancel_at"] = end;
            after["canceled_at"] = json!(self.now);
            after["cancellation_details"] = json!({"comment": null, "feedback": "switched_service", "reason": "cancellation_requested"});
            self.g.a.put(Kind::Subscription, &after);
            self.event("customer.subscription.updated", &after, Some(&before));
        } else {
            after["status"] = json!("canceled");
            after["canceled_at"] = json!(self.now);
            after["ended_at"] = json!(self.now);
            after["cancellation_details"] = json!({"comment": null, "feedback": "too_expensive", "reason": "cancellation_requested"});
            self.g.a.put(Kind::Subscription, &after);
            self.event("customer.subscription.deleted", &after, None);
        }
        self.change("subscription_canceled", &after);
        true
    }

    fn refund(&mut self) -> bool {
        let a = &*self.g.a;
        let pool = self
            .pools
            .charges
            .get_or_insert_with(|| a.col(Kind::Charge).live_ids());
        for _ in 0..20 {
            let Some(id) = Self::take(&mut self.g.r, pool) else {
                return false;
            };
            if let Some((re, before, after)) = self.g.refund(&id, self.now, None) {
                self.event("charge.refunded", &after, Some(&before));
                self.event("refund.created", &re, None);
                self.change("refund", &re);
                return true;
            }
        }
        false
    }

    fn pay(&mut self) -> bool {
        let a = &*self.g.a;
        let pool = self
            .pools
            .open_invoices
            .get_or_insert_with(|| a.col(Kind::Invoice).ids_where(2, "open"));
        let Some(id) = Self::take(&mut self.g.r, pool) else {
            return false;
        };
        let Some(before) = self.g.a.col(Kind::Invoice).value(&id) else {
            return false;
        };
        let amount = before["amount_remaining"].as_i64().unwrap_or(0);
        let currency = before["currency"].as_str().unwrap_or("usd").to_string();
        let cust = before["customer"].as_str().unwrap_or_default().to_string();
        let email = before["customer_email"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = before["customer_name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // An earlier failed attempt is superseded.
        for ip_id in self.g.a.col(Kind::InvoicePayment).ids_where(0, &id) {
            if let Some(old) = self.g.a.col(Kind::InvoicePayment).value(&ip_id)
                && old["status"] == json!("open")
            {
                let mut o = old.clone();
                o["status"] = json!("canceled");
                o["is_default"] = json!(false);
                o["status_transitions"]["canceled_at"] = json!(self.now);
                self.g.a.put(Kind::InvoicePayment, &o);
            }
        }
        let (ip, pi, ch) = self.g.invoice_payment(
            &id,
            self.now,
            amount,
            &currency,
            &cust,
            &email,
            &name,
            true,
            "Invoice payment",
        );
        let mut after = before.clone();
        after["status"] = json!("paid");
        after["amount_paid"] = json!(before["amount_due"].as_i64().unwrap_or(amount));
        after["amount_remaining"] = json!(0);
        after["attempted"] = json!(true);
        after["attempt_count"] = json!(before["attempt_count"].as_i64().unwrap_or(0) + 1);
        after["next_payment_attempt"] = Value::Null;
        after["auto_advance"] = json!(false);
        after["status_transitions"]["paid_at"] = json!(self.now);
        self.g.a.put(Kind::Invoice, &after);
        for (k, id, typ) in [
            (Kind::PaymentIntent, pi, "payment_intent.succeeded"),
            (Kind::Charge, ch, "charge.succeeded"),
        ] {
            if let Some(v) = self.g.a.col(k).value(&id) {
                self.event(typ, &v, None);
            }
        }
        self.event("invoice_payment.paid", &ip, None);
        self.event("invoice.paid", &after, Some(&before));
        if let Some(sub) = before
            .pointer("/parent/subscription_details/subscription")
            .and_then(Value::as_str)
            && let Some(sb) = self.g.a.col(Kind::Subscription).value(sub)
            && sb["status"] == json!("past_due")
        {
            let mut sa = sb.clone();
            sa["status"] = json!("active");
            self.g.a.put(Kind::Subscription, &sa);
            self.event("customer.subscription.updated", &sa, Some(&sb));
        }
        self.change("invoice_paid", &after);
        true
    }

    fn customer_pool(&mut self) -> &mut Vec<Arc<str>> {
        let a = &*self.g.a;
        self.pools
            .customers
            .get_or_insert_with(|| a.col(Kind::Customer).live_ids())
    }

    fn email(&mut self) -> bool {
        let mut r = self.g.r.clone();
        let picked = Self::take(&mut r, self.customer_pool());
        self.g.r = r;
        let Some(id) = picked else { return false };
        let Some(before) = self.g.a.col(Kind::Customer).value(&id) else {
            return false;
        };
        let mut after = before.clone();
        let local = self.g.r.alnum(6).to_lowercase();
        after["email"] = json!(format!("{local}.updated@example.com"));
        self.g.a.put(Kind::Customer, &after);
        self.event("customer.updated", &after, Some(&before));
        self.change("email_updated", &after);
        // Keep it available for other changes.
        self.customer_pool().push(id);
        true
    }

    fn delete(&mut self) -> bool {
        let mut r = self.g.r.clone();
        let picked = Self::take(&mut r, self.customer_pool());
        self.g.r = r;
        let Some(id) = picked else { return false };
        let Some(before) = self.g.a.col(Kind::Customer).value(&id) else {
            return false;
        };
        for sid in self.g.a.col(Kind::Subscription).ids_where(0, &id) {
            if let Some(sb) = self.g.a.col(Kind::Subscription).value(&sid)
                && !matches!(
                    sb["status"].as_str(),
                    Some("canceled" | "incomplete_expired")
                )
            {
                let mut sa = sb.clone();
                sa["status"] = json!("canceled");
                sa["canceled_at"] = json!(self.now);
                sa["ended_at"] = json!(self.now);
                self.g.a.put(Kind::Subscription, &sa);
                self.event("customer.subscription.deleted", &sa, None);
            }
        }
        self.g.a.put(
            Kind::Customer,
            &json!({"id": id.as_ref(), "object": "customer", "deleted": true}),
        );
        self.event("customer.deleted", &before, None);
        self.change("customer_deleted", &before);
        true
    }

    fn new_payment(&mut self) {
        let existing = if self.g.r.chance(0.6) {
            let mut r = self.g.r.clone();
            let pool = self.customer_pool();
            let pick =
                (!pool.is_empty()).then(|| pool[r.below(pool.len() as u64) as usize].clone());
            self.g.r = r;
            pick.and_then(|id| self.g.a.col(Kind::Customer).value(&id))
        } else {
            None
        };
        let customer = match existing {
            Some(c) => Some(c),
            None if self.g.r.chance(0.5) => {
                let id = self.g.r.id("cus_", 14);
                let mut c = crate::templates::customer();
                let email = format!("{}.new@example.com", self.g.r.alnum(8).to_lowercase());
                crate::templates::set(
                    &mut c,
                    vec![
                        ("id", json!(id)),
                        ("created", json!(self.now - 10)),
                        ("email", json!(email)),
                        ("name", json!("New Customer")),
                        ("invoice_prefix", json!(self.g.r.alnum(8).to_uppercase())),
                    ],
                );
                self.g.a.put(Kind::Customer, &c);
                self.event("customer.created", &c, None);
                self.customer_pool().push(Arc::from(id.as_str()));
                Some(c)
            }
            None => None,
        };
        let currency = customer
            .as_ref()
            .and_then(|c| c["currency"].as_str().map(str::to_string))
            .filter(|c| self.g.onetime.contains_key(c))
            .unwrap_or_else(|| self.g.currencies[0].0.clone());
        let (cid, email, name) = match &customer {
            Some(c) => (
                c["id"].as_str().map(str::to_string),
                c["email"].as_str().unwrap_or("").to_string(),
                c["name"].as_str().unwrap_or("").to_string(),
            ),
            None => (
                None,
                format!("guest.{}@example.com", self.g.r.alnum(6).to_lowercase()),
                String::new(),
            ),
        };
        let refunds_before = self.g.a.col(Kind::Refund).len_all();
        let (cs, pi, ch) = self.g.payment_session(
            self.now - 5,
            &currency,
            cid.as_deref(),
            &email,
            &name,
            false,
        );
        if let Some(v) = self.g.a.col(Kind::PaymentIntent).value(&pi) {
            self.event("payment_intent.succeeded", &v, None);
        }
        if let Some(v) = self.g.a.col(Kind::Charge).value(&ch) {
            self.event("charge.succeeded", &v, None);
        }
        if let Some(v) = self.g.a.col(Kind::CheckoutSession).value(&cs) {
            self.event("checkout.session.completed", &v, None);
            self.change("new_payment", &v);
        }
        if self.g.a.col(Kind::Refund).len_all() > refunds_before
            && let Some(v) = self.g.a.col(Kind::Charge).value(&ch)
        {
            self.event("charge.refunded", &v, None);
        }
    }
}

async fn revoke(sim: web::Data<Sim>, acct: web::Path<String>) -> HttpResponse {
    let now = sim.now();
    let mut world = sim.write();
    if !world.order.contains(&acct) {
        return not_found(&acct);
    }
    crate::oauth::revoke(&sim, &mut world, &acct, crate::oauth::CLIENT_ID, now);
    HttpResponse::Ok().json(json!({"id": acct.as_str(), "status": "revoked"}))
}

async fn set_faults(sim: web::Data<Sim>, body: web::Bytes) -> HttpResponse {
    let cfg: FaultConfig = if body.iter().all(u8::is_ascii_whitespace) {
        FaultConfig::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(c) => c,
            Err(e) => return bad(format!("invalid faults: {e}")),
        }
    };
    for r in [cfg.error_ratio, cfg.reset_ratio, cfg.lock_timeout_ratio]
        .into_iter()
        .flatten()
    {
        if !(0.0..=1.0).contains(&r) {
            return bad("ratios must be between 0 and 1");
        }
    }
    let mut f = sim
        .faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f.set(cfg.clone());
    HttpResponse::Ok().json(cfg)
}

async fn get_faults(sim: web::Data<Sim>) -> HttpResponse {
    let f = sim
        .faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    HttpResponse::Ok().json(&f.config)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    secret: String,
    #[serde(default)]
    connect: bool,
    account: Option<String>,
}

async fn add_webhook(sim: web::Data<Sim>, body: web::Json<NewWebhook>) -> HttpResponse {
    let b = body.into_inner();
    if url::Url::parse(&b.url).is_err() {
        return bad("url is not a valid URL");
    }
    let mut world = sim.write();
    let id = world.rng.id("we_1", 23);
    let ep = Endpoint {
        id,
        url: b.url,
        secret: b.secret,
        connect: b.connect,
        account: b.account,
        stats: Arc::new(EndpointStats::default()),
    };
    let out = ep.describe();
    world.endpoints.push(ep);
    HttpResponse::Ok().json(out)
}

async fn list_webhooks(sim: web::Data<Sim>) -> HttpResponse {
    let world = sim.read();
    HttpResponse::Ok().json(
        world
            .endpoints
            .iter()
            .map(Endpoint::describe)
            .collect::<Vec<_>>(),
    )
}

async fn clear_webhooks(sim: web::Data<Sim>) -> HttpResponse {
    sim.write().endpoints.clear();
    HttpResponse::Ok().json(json!([]))
}

async fn requests(sim: web::Data<Sim>) -> HttpResponse {
    let s = sim
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    HttpResponse::Ok().json(json!({
        "total": s.total,
        "by_route": s.by_route,
        "connections": sim.connections.load(Ordering::Relaxed),
    }))
}

async fn reset_requests(sim: web::Data<Sim>) -> HttpResponse {
    let mut s = sim
        .stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *s = crate::Stats::default();
    HttpResponse::Ok().json(json!({"total": 0}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Advance {
    advance_seconds: i64,
}

async fn advance_clock(sim: web::Data<Sim>, body: web::Json<Advance>) -> HttpResponse {
    if body.advance_seconds < 0 {
        return bad("the clock only moves forward");
    }
    sim.clock_offset
        .fetch_add(body.advance_seconds, Ordering::Relaxed);
    HttpResponse::Ok()
        .json(json!({"now": sim.now(), "offset": sim.clock_offset.load(Ordering::Relaxed)}))
}

async fn get_clock(sim: web::Data<Sim>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"now": sim.now(), "offset": sim.clock_offset.load(Ordering::Relaxed)}))
}

async fn platform(sim: web::Data<Sim>, _req: HttpRequest) -> HttpResponse {
    let world = sim.read();
    HttpResponse::Ok().json(json!({"id": world.platform, "client_id": crate::oauth::CLIENT_ID}))
}

pub fn scope() -> actix_web::Scope {
    let json_cfg = web::JsonConfig::default()
        .limit(64 * 1024 * 1024)
        .error_handler(|err, _| {
            actix_web::error::InternalError::from_response(String::new(), bad(err.to_string()))
                .into()
        });
    web::scope("/_sim")
        .app_data(json_cfg)
        .route("/accounts", web::get().to(list_accounts))
        .route("/accounts", web::post().to(create_account))
        .route("/accounts/{acct}/objects", web::post().to(post_objects))
        .route("/accounts/{acct}/mutate", web::post().to(mutate))
        .route("/accounts/{acct}/revoke", web::post().to(revoke))
        .route("/faults", web::post().to(set_faults))
        .route("/faults", web::get().to(get_faults))
        .route("/webhooks", web::post().to(add_webhook))
        .route("/webhooks", web::get().to(list_webhooks))
        .route("/webhooks", web::delete().to(clear_webhooks))
        .route("/requests", web::get().to(requests))
        .route("/requests", web::delete().to(reset_requests))
        .route("/clock", web::post().to(advance_clock))
        .route("/clock", web::get().to(get_clock))
        .route("/platform", web::get().to(platform))
}
