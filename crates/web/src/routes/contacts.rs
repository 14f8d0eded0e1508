//! Contacts and Sales (SPEC §8): the Stripe customers grid, spend by email, and one email's
//! Stripe detail. All three read the `customer_spend` read model (one implementation of the
//! §7 rules, `tributary_domain::spend`), so their totals always agree.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tributary_domain::spend::{self, MovementSource};
use tributary_domain::{BusinessId, Currency, Email};
use tributary_persistence::access;
use tributary_persistence::entities::customer_spend;
use tributary_persistence::reads::{self, SpendQuery, SpendSort};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{AuthedBusiness, Identity};
use crate::error::ApiError;
use crate::openapi::{
    CustomerGrid, Error, Internal, NotFound, PayloadTooLarge, StripeInfo, Summaries, Unauthorized,
};
use crate::state::AppState;
use crate::views::rfc3339;

/// Most emails one request may name (`emails`, `contact_emails`).
pub const MAX_EMAILS: usize = 1000;
/// Most rows one grid page lists.
pub const MAX_PER_PAGE: u64 = 100;
/// Longest search text.
const MAX_SEARCH: usize = 200;

/// The query of the customers grid (`/api/contacts/stripe-customers`): paging, sort, search.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GridQuery {
    /// The business (a token must grant it); required on `GET`, and on `POST` it must match
    /// the body's when given.
    #[serde(rename = "businessId")]
    business_id: Option<String>,
    #[param(default = 1, minimum = 1, maximum = 1_000_000)]
    page: Option<u64>,
    #[param(default = 50, minimum = 1, maximum = 100)]
    per_page: Option<u64>,
    /// `total_spent` (by net in `currency` when given, else by the row's primary net),
    /// `last_purchase` or `email`.
    #[param(
        default = "total_spent",
        pattern = "^(total_spent|last_purchase|email)$"
    )]
    sort: Option<String>,
    #[param(default = "desc", pattern = "^(asc|desc)$")]
    order: Option<String>,
    /// Search text (email or name), at most 200 characters.
    q: Option<String>,
    /// Three-letter ISO code (`usd`).
    currency: Option<String>,
}

fn parse_grid(q: &GridQuery) -> Result<SpendQuery, ApiError> {
    let page = q.page.unwrap_or(1);
    if page == 0 || page > 1_000_000 {
        return Err(ApiError::bad_request(
            "invalid_page",
            "page must be between 1 and 1000000",
        ));
    }
    let per_page = q.per_page.unwrap_or(50);
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::bad_request(
            "invalid_per_page",
            format!("per_page must be between 1 and {MAX_PER_PAGE}"),
        ));
    }
    let sort = match q.sort.as_deref().unwrap_or("total_spent") {
        "total_spent" => SpendSort::TotalSpent,
        "last_purchase" => SpendSort::LastPurchase,
        "email" => SpendSort::Email,
        other => {
            return Err(ApiError::bad_request(
                "invalid_sort",
                format!("sort must be total_spent, last_purchase or email, not '{other}'"),
            ));
        }
    };
    let descending = match q.order.as_deref().unwrap_or("desc") {
        "desc" => true,
        "asc" => false,
        other => {
            return Err(ApiError::bad_request(
                "invalid_order",
                format!("order must be asc or desc, not '{other}'"),
            ));
        }
    };
    if q.q
        .as_deref()
        .is_some_and(|s| s.chars().count() > MAX_SEARCH)
    {
        return Err(ApiError::bad_request(
            "invalid_search",
            format!("q must be at most {MAX_SEARCH} characters"),
        ));
    }
    // No name or email holds a control character, and PostgreSQL refuses a NUL in the
    // pattern (the search answered 500).
    if q.q
        .as_deref()
        .is_some_and(|s| s.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_search",
            "q must not contain control characters",
        ));
    }
    Ok(SpendQuery {
        page,
        per_page,
        sort,
        descending,
        search: q.q.clone(),
        currency: parse_currency(q.currency.as_deref())?,
    })
}

pub(crate) fn parse_currency(raw: Option<&str>) -> Result<Option<Currency>, ApiError> {
    raw.map(|c| {
        Currency::parse(c).map_err(|_| {
            ApiError::bad_request(
                "invalid_currency",
                format!("currency must be a three-letter ISO code such as usd, not '{c}'"),
            )
        })
    })
    .transpose()
}

/// Normalises a list of emails; any malformed one is a 400 naming them (up to 10).
fn parse_emails(field: &str, raw: &[String]) -> Result<Vec<Email>, ApiError> {
    if raw.len() > MAX_EMAILS {
        return Err(ApiError::bad_request(
            "too_many_emails",
            format!(
                "{field} lists {} emails; at most {MAX_EMAILS} per request",
                raw.len()
            ),
        ));
    }
    let mut bad = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    for e in raw {
        match Email::parse(e) {
            Ok(email) => out.push(email),
            Err(_) => bad.push(e.clone()),
        }
    }
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().take(10).map(|b| format!("{b:?}")).collect();
        let more = if bad.len() > 10 {
            format!(" and {} more", bad.len() - 10)
        } else {
            String::new()
        };
        return Err(ApiError::bad_request(
            "invalid_emails",
            format!(
                "{field} has {} malformed email(s): {}{more}",
                bad.len(),
                shown.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// One currency's total of an email (`{"currency", "gross", "refunded", "net"}`).
#[derive(Serialize)]
struct Total<'a> {
    currency: &'a str,
    gross: i64,
    refunded: i64,
    net: i64,
}

fn totals(rows: &[customer_spend::Model]) -> Vec<Total<'_>> {
    rows.iter()
        .map(|r| Total {
            currency: &r.currency,
            gross: r.gross,
            refunded: r.refunded,
            net: r.net,
        })
        .collect()
}

/// `{"totals", "order_count", "last_purchase_at"}` of one email's rows.
#[derive(Serialize)]
struct Summary<'a> {
    totals: Vec<Total<'a>>,
    order_count: i64,
    last_purchase_at: Option<String>,
}

fn summary(rows: &[customer_spend::Model]) -> Summary<'_> {
    let first = rows.first();
    Summary {
        totals: totals(rows),
        order_count: first.map_or(0, |r| r.email_order_count),
        last_purchase_at: first.map(|r| rfc3339(r.email_last_purchase_at)),
    }
}

fn grid_item(rows: &[customer_spend::Model], contacts: Option<&BTreeSet<Email>>) -> Value {
    let primary = rows.iter().find(|r| r.is_primary).or(rows.first());
    let email = primary.map(|r| r.email.clone()).unwrap_or_default();
    let contact_match = contacts.map(|c| c.iter().any(|e| e.as_str() == email));
    json!({
        "email": email,
        "name": primary.and_then(|r| r.name.clone()),
        "customer_ids": primary.map_or(json!([]), |r| r.customer_ids.clone()),
        "totals": totals(rows),
        "order_count": primary.map_or(0, |r| r.email_order_count),
        "last_purchase_at": primary.map(|r| rfc3339(r.email_last_purchase_at)),
        "currency": primary.map(|r| r.currency.clone()),
        "contact_match": contact_match,
    })
}

async fn grid(
    state: &AppState,
    business: &BusinessId,
    query: &GridQuery,
    contacts: Option<BTreeSet<Email>>,
) -> Result<HttpResponse, ApiError> {
    let q = parse_grid(query)?;
    // A search is the database's; so is every read while no snapshot is current.
    let kept = match q.search() {
        Some(_) => None,
        None => spend_snapshot(state, business).await?,
    };
    let (items, total): (Vec<Value>, u64) = match kept
        .as_deref()
        .and_then(|k| Some((&k.spend, k.spend.page(&q)?)))
    {
        Some((s, (emails, total))) => (
            emails
                .into_iter()
                .map(|e| grid_item(s.of_email(e), contacts.as_ref()))
                .collect(),
            total,
        ),
        None => {
            let page = reads::spend_page(state.db.conn(), business, &q).await?;
            (
                page.emails
                    .iter()
                    .map(|e| {
                        grid_item(
                            page.rows.get(e).map_or(&[][..], Vec::as_slice),
                            contacts.as_ref(),
                        )
                    })
                    .collect(),
                page.total,
            )
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "items": items,
        "page": q.page,
        "per_page": q.per_page,
        "total": total,
    })))
}

/// The business's spend rows in memory when they are at its current data version (see
/// [`crate::routes::spend_cache`]); `None` means: ask the database.
async fn spend_snapshot(
    state: &AppState,
    business: &BusinessId,
) -> Result<Option<std::sync::Arc<super::spend_cache::Kept>>, ApiError> {
    let version = access::data_version(&state.db, business).await?;
    Ok(state.spend.current(&state.db, business, version))
}

/// `GET /api/contacts/stripe-customers?businessId=B&page&per_page&sort&order&q&currency`.
#[utoipa::path(
    get,
    path = "/api/contacts/stripe-customers",
    tag = "contacts",
    summary = "The Stripe customers grid: spend by email, paged",
    params(GridQuery),
    responses(
        (status = 200, description = "A page of the grid.", body = CustomerGrid),
        (status = 400, description = "`missing_business_id`, `invalid_page`, `invalid_per_page`, \
            `invalid_sort`, `invalid_order`, `invalid_search`, `invalid_currency`, \
            `invalid_query`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn stripe_customers(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    query: web::Query<GridQuery>,
) -> Result<HttpResponse, ApiError> {
    grid(&state, &auth.business, &query, None).await
}

/// The body of `POST /api/contacts/stripe-customers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GridBody {
    #[serde(rename = "businessId")]
    business_id: String,
    /// The host's contacts; each row's `contact_match` says whether its email is one of them.
    /// At most 1000.
    #[serde(default)]
    contact_emails: Vec<String>,
}

/// The business named in a body, checked against the token (404 outside its claims).
fn body_business(
    identity: &Identity,
    body: &str,
    query: Option<&str>,
) -> Result<BusinessId, ApiError> {
    if let Some(q) = query.filter(|q| *q != body) {
        return Err(ApiError::bad_request(
            "invalid_business_id",
            format!("businessId is '{body}' in the body but '{q}' in the query"),
        ));
    }
    identity.business(body)
}

/// `POST /api/contacts/stripe-customers` `{"businessId", "contact_emails"}`: the grid with
/// `contact_match` (paging, sort and search in the query string).
#[utoipa::path(
    post,
    path = "/api/contacts/stripe-customers",
    tag = "contacts",
    summary = "The customers grid with `contact_match` against the host's contacts",
    params(GridQuery),
    request_body = GridBody,
    responses(
        (status = 200, description = "A page of the grid.", body = CustomerGrid),
        (status = 400, description = "`missing_business_id`, `invalid_page`, `invalid_per_page`, \
            `invalid_sort`, `invalid_order`, `invalid_search`, `invalid_currency`, \
            `invalid_query`, `invalid_business_id`, `invalid_emails`, `too_many_emails`, `invalid_json`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn stripe_customers_matching(
    state: web::Data<AppState>,
    identity: Identity,
    query: web::Query<GridQuery>,
    body: web::Json<GridBody>,
) -> Result<HttpResponse, ApiError> {
    let business = body_business(&identity, &body.business_id, query.business_id.as_deref())?;
    let contacts: BTreeSet<Email> = parse_emails("contact_emails", &body.contact_emails)?
        .into_iter()
        .collect();
    grid(&state, &business, &query, Some(contacts)).await
}

/// The body of `POST /api/contacts/stripe-summary-by-emails`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SummaryBody {
    #[serde(rename = "businessId")]
    business_id: String,
    /// At most 1000.
    emails: Vec<String>,
}

/// `POST /api/contacts/stripe-summary-by-emails` `{"businessId", "emails": […≤1000]}`.
#[utoipa::path(
    post,
    path = "/api/contacts/stripe-summary-by-emails",
    tag = "contacts",
    summary = "Spend of each of up to 1000 emails",
    request_body = SummaryBody,
    responses(
        (status = 200, description = "Spend by normalised email.", body = Summaries),
        (status = 400, description = "`invalid_emails`, `too_many_emails`, `invalid_json`.",
            body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn summary_by_emails(
    state: web::Data<AppState>,
    identity: Identity,
    body: web::Json<SummaryBody>,
) -> Result<HttpResponse, ApiError> {
    let business = body_business(&identity, &body.business_id, None)?;
    let mut emails: Vec<String> = parse_emails("emails", &body.emails)?
        .into_iter()
        .map(Email::into_inner)
        .collect();
    // The body's keys in order, each once (as a JSON object's keys are).
    emails.sort_unstable();
    emails.dedup();
    let body = match spend_snapshot(&state, &business).await? {
        // Each email's entry was rendered when the rows were loaded.
        Some(kept) => summaries_body(emails.iter().filter_map(|e| kept.entry(e))),
        None => {
            let rows = reads::spend_of_emails(state.db.conn(), &business, &emails).await?;
            let entries: Vec<Vec<u8>> = rows.iter().map(|(e, r)| summary_entry(e, r)).collect();
            summaries_body(entries.iter().map(Vec::as_slice))
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

/// One email's entry of a summaries body: `"<email>":{"totals",…}` (JSON text).
pub(crate) fn summary_entry(email: &str, rows: &[customer_spend::Model]) -> Vec<u8> {
    // Strings and numbers into memory: serde_json fails only on I/O or a map with keys
    // that are not strings, and neither can happen here.
    const INFALLIBLE: &str = "a summary serialises to memory";
    let mut entry = Vec::with_capacity(64 + 96 * rows.len());
    serde_json::to_writer(&mut entry, email).expect(INFALLIBLE);
    entry.push(b':');
    serde_json::to_writer(&mut entry, &summary(rows)).expect(INFALLIBLE);
    entry
}

/// `{"summaries":{…}}` of entries (see [`summary_entry`]) in email order.
fn summaries_body<'a>(entries: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut body = b"{\"summaries\":{".to_vec();
    for (i, entry) in entries.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(entry);
    }
    body.extend_from_slice(b"}}");
    body
}

/// The query of `GET /api/contacts/stripe-info`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InfoQuery {
    /// The business (a token must grant it).
    #[serde(rename = "businessId")]
    #[param(required = true)]
    #[allow(dead_code)]
    business_id: Option<String>,
    /// The email; normalised before the lookup.
    #[param(required = true)]
    email: Option<String>,
}

fn source_name(s: MovementSource) -> &'static str {
    match s {
        MovementSource::PaymentIntent => "payment_intent",
        MovementSource::Charge => "charge",
        MovementSource::Invoice => "invoice",
        MovementSource::CheckoutSession => "checkout_session",
    }
}

/// `GET /api/contacts/stripe-info?businessId=B&email=E`: the email's customers, the payments
/// counted for it (each movement once, with its refunds, invoice and session), its invoices,
/// checkout sessions and subscriptions, and the same summary as the other two reads.
#[utoipa::path(
    get,
    path = "/api/contacts/stripe-info",
    tag = "contacts",
    summary = "One email's Stripe detail",
    params(InfoQuery),
    responses(
        (status = 200, description = "The email's customers, payments, invoices, sessions and \
            subscriptions, and its summary.", body = StripeInfo),
        (status = 400, description = "`missing_business_id`, `missing_email`, `invalid_email`, \
            `invalid_query`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn stripe_info(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    query: web::Query<InfoQuery>,
) -> Result<HttpResponse, ApiError> {
    let raw = query
        .email
        .as_deref()
        .ok_or_else(|| ApiError::bad_request("missing_email", "email is required"))?;
    let email = Email::parse(raw).map_err(|e| {
        ApiError::bad_request("invalid_email", format!("email {raw:?} is not valid: {e}"))
    })?;
    // Index lookups of a few shapes, planned once per pooled connection.
    let conn = state.db.lookups();
    let business = &auth.business;
    let emails = [email.as_str().to_owned()];
    // The walk and the summary's row side by side, on two pooled connections.
    let (graph, spend) = futures::try_join!(
        reads::email_graph(conn, business, &email),
        reads::spend_of_emails(conn, business, &emails),
    )?;
    let movements: Vec<spend::Movement> = spend::movements(&reads::graph_facts(&graph))
        .into_iter()
        .filter(|m| m.email.as_ref() == Some(&email))
        .collect();

    let customer_ids: Vec<String> = graph
        .customers
        .values()
        .filter(|c| c.email.as_deref() == Some(email.as_str()))
        .map(|c| c.stripe_id.clone())
        .collect();
    let customers: Vec<Value> = graph
        .customers
        .values()
        .filter(|c| c.email.as_deref() == Some(email.as_str()))
        .map(|c| {
            json!({
                "id": c.stripe_id,
                "created": rfc3339(c.created),
                "status": if c.deleted { "deleted" } else { "active" },
                "amount": null,
                "currency": c.currency,
                "email": c.email,
                "name": c.name,
            })
        })
        .collect();

    let payments: Vec<Value> = movements
        .iter()
        .rev()
        .map(|m| {
            let status = match m.source {
                MovementSource::PaymentIntent | MovementSource::Charge => "succeeded",
                MovementSource::Invoice | MovementSource::CheckoutSession => "paid",
            };
            json!({
                "id": m.id,
                "source": source_name(m.source),
                "created": rfc3339(m.occurred_at),
                "status": status,
                "amount": m.gross,
                "currency": m.currency,
                "refunded": m.refunded,
                "net": m.net(),
                "refunds": m.refunds.iter().map(|r| json!({"id": r.id, "amount": r.amount, "created": rfc3339(r.created)})).collect::<Vec<_>>(),
                "invoice": m.invoice,
                "checkout_session": m.checkout_session,
                "customer": m.customer_id,
            })
        })
        .collect();

    // Invoices and sessions of the email: named by its customers or the email itself, or
    // carrying one of its movements.
    let linked_invoices: BTreeSet<&str> = movements
        .iter()
        .filter_map(|m| m.invoice.as_deref())
        .collect();
    let linked_sessions: BTreeSet<&str> = movements
        .iter()
        .filter_map(|m| m.checkout_session.as_deref())
        .collect();
    let mine = |customer: &Option<String>, mail: &Option<String>| {
        customer.as_ref().is_some_and(|c| customer_ids.contains(c))
            || mail.as_deref() == Some(email.as_str())
    };
    let mut invoices: Vec<&_> = graph
        .invoices
        .values()
        .filter(|i| mine(&i.customer, &i.email) || linked_invoices.contains(i.stripe_id.as_str()))
        .collect();
    invoices.sort_by(|a, b| (b.created, &b.stripe_id).cmp(&(a.created, &a.stripe_id)));
    let invoices: Vec<Value> = invoices
        .into_iter()
        .map(|i| {
            json!({
                "id": i.stripe_id,
                "created": rfc3339(i.created),
                "status": i.status,
                "amount": i.total,
                "currency": i.currency,
                "amount_due": i.amount_due,
                "amount_paid": i.amount_paid,
                "amount_remaining": i.amount_remaining,
                "number": i.number,
                "customer": i.customer,
                "subscription": i.subscription,
                "paid_at": i.paid_at.map(rfc3339),
            })
        })
        .collect();
    let mut sessions: Vec<&_> = graph
        .checkout_sessions
        .values()
        .filter(|s| mine(&s.customer, &s.email) || linked_sessions.contains(s.stripe_id.as_str()))
        .collect();
    sessions.sort_by(|a, b| (b.created, &b.stripe_id).cmp(&(a.created, &a.stripe_id)));
    let sessions: Vec<Value> = sessions
        .into_iter()
        .map(|s| {
            json!({
                "id": s.stripe_id,
                "created": rfc3339(s.created),
                "status": s.status,
                "amount": s.amount_total,
                "currency": s.currency,
                "mode": s.mode,
                "payment_status": s.payment_status,
                "customer": s.customer,
                "payment_intent": s.payment_intent,
                "invoice": s.invoice,
                "subscription": s.subscription,
            })
        })
        .collect();

    let subs = reads::subscriptions_of_customers(conn, business, &customer_ids).await?;
    let sub_ids: Vec<String> = subs.iter().map(|s| s.stripe_id.clone()).collect();
    let mut items: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut per_period: BTreeMap<String, i64> = BTreeMap::new();
    for it in reads::subscription_items(conn, business, &sub_ids).await? {
        *per_period.entry(it.subscription.clone()).or_default() +=
            it.unit_amount.unwrap_or(0) * it.quantity;
        items
            .entry(it.subscription.clone())
            .or_default()
            .push(json!({
                "id": it.stripe_id,
                "price": it.price,
                "product": it.product,
                "quantity": it.quantity,
                "unit_amount": it.unit_amount,
                "currency": it.currency,
                "interval": it.recurring_interval,
                "interval_count": it.recurring_interval_count,
                "usage_type": it.recurring_usage_type,
            }));
    }
    let subscriptions: Vec<Value> = subs
        .iter()
        .map(|s| {
            json!({
                "id": s.stripe_id,
                "created": rfc3339(s.created),
                "status": s.status,
                "amount": per_period.get(&s.stripe_id).copied().unwrap_or(0),
                "currency": s.currency,
                "mrr": s.mrr,
                "customer": s.customer,
                "items": items.remove(&s.stripe_id).unwrap_or_default(),
                "start_date": s.start_date.map(rfc3339),
                "current_period_end": s.current_period_end.map(rfc3339),
                "cancel_at_period_end": s.cancel_at_period_end,
                "canceled_at": s.canceled_at.map(rfc3339),
                "ended_at": s.ended_at.map(rfc3339),
                "trial_end": s.trial_end.map(rfc3339),
            })
        })
        .collect();

    let rows = spend.get(email.as_str()).map_or(&[][..], Vec::as_slice);
    Ok(HttpResponse::Ok().json(json!({
        "email": email,
        "customers": customers,
        "payments": payments,
        "invoices": invoices,
        "checkout_sessions": sessions,
        "subscriptions": subscriptions,
        "summary": summary(rows),
    })))
}
