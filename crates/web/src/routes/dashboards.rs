//! Dashboards (SPEC §9): revenue, retention and acquisition per month. The definitions are
//! `tributary_domain::metrics` (documented in `docs/metrics.md`); this module checks the
//! request, loads the business's movements, subscriptions and MRR snapshots, and keeps what it
//! computed until the business's data changes ([`DashboardCache`]).

use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::json;
use tributary_domain::metrics::{self, Month, MrrTimeline, Snapshot, SubscriptionHistory};
use tributary_domain::spend::{self, Movement};
use tributary_domain::{BusinessId, Currency};
use tributary_persistence::entities::stripe_subscriptions;
use tributary_persistence::{access, reads};

use crate::auth::AuthedBusiness;
use crate::error::ApiError;
use crate::openapi::{Acquisition, Error, Internal, NotFound, Retention, Revenue, Unauthorized};
use crate::routes::contacts::parse_currency;
use crate::state::AppState;

/// Longest range one request may ask for, in months.
pub const MAX_MONTHS: i64 = 60;

/// The query of every dashboard: the months and the currency.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// First month, `YYYY-MM` (UTC); 11 months before `to` by default. At most 60 months.
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$", example = "2026-01")]
    from: Option<String>,
    /// Last month, `YYYY-MM`, not after the current month (the default).
    #[param(pattern = "^[0-9]{4}-[0-9]{2}$", example = "2026-12")]
    to: Option<String>,
    /// Amounts are in minor units of this currency.
    #[param(default = "usd")]
    currency: Option<String>,
}

/// The checked request: months `from..=to` and the currency.
struct Range {
    months: Vec<Month>,
    currency: Currency,
    now: i64,
}

fn parse_month(field: &str, raw: &str) -> Result<Month, ApiError> {
    Month::parse(raw).map_err(|_| {
        ApiError::bad_request(
            "invalid_month",
            format!("{field} must be a month as YYYY-MM (e.g. 2026-01), not '{raw}'"),
        )
    })
}

fn range(q: &RangeQuery) -> Result<Range, ApiError> {
    let now = tributary_persistence::now();
    let current = Month::of_unix(now);
    let to = match q.to.as_deref() {
        Some(raw) => parse_month("to", raw)?,
        None => current,
    };
    let from = match q.from.as_deref() {
        Some(raw) => parse_month("from", raw)?,
        None => to.add_months(-11),
    };
    if from > to {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("from ({from}) is after to ({to})"),
        ));
    }
    if to > current {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("to ({to}) is after the current month ({current})"),
        ));
    }
    if from.months_until(to) >= MAX_MONTHS {
        return Err(ApiError::bad_request(
            "invalid_range",
            format!("the range {from}..{to} is longer than {MAX_MONTHS} months"),
        ));
    }
    let currency = parse_currency(Some(q.currency.as_deref().unwrap_or("usd")))?
        .ok_or_else(|| ApiError::bad_request("invalid_currency", "currency is required"))?;
    Ok(Range {
        months: from.through(to),
        currency,
        now,
    })
}

/// What every dashboard derives from the whole business: its movements and subscriptions.
#[derive(Debug)]
pub struct Inputs {
    movements: Vec<Movement>,
    subscriptions: Vec<SubscriptionHistory>,
}

/// What the dashboards keep per business, for its current `data_version` only (see
/// `tributary_persistence::access::lock_for_write`), so the work is done once per change of
/// the business's data, not once per request:
///
/// - the [`Inputs`]: loading them reads every mirror row of the business. Bounded by
///   [`INPUTS_WEIGHT`] movements and subscriptions in all (about 400 bytes each); concurrent
///   requests of one business share one load;
/// - the answers, per dashboard, range, currency and day (the current month's numbers depend
///   on the day). Bounded by [`ANSWERS_BYTES`].
///
/// Each entry carries the version it was computed at and is replaced, not added to, when the
/// version moves on: a business whose data changes all day holds one set of entries, not one
/// per change. A business without a connection row is computed uncached.
#[derive(Debug)]
pub struct DashboardCache {
    inputs: quick_cache::sync::Cache<String, (i64, Arc<Inputs>), Weight>,
    answers: quick_cache::sync::Cache<AnswerKey, (i64, Bytes), Weight>,
}

/// One cached answer: business, dashboard, first and last month, currency, day.
type AnswerKey = (String, Dashboard, String, String, String, i64);

/// Which dashboard a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dashboard {
    Revenue,
    Retention,
    Acquisition,
}

/// The most movements and subscriptions kept, all businesses together.
pub const INPUTS_WEIGHT: u64 = 250_000;
/// The most bytes of answers kept, all businesses together.
pub const ANSWERS_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone)]
struct Weight;

impl quick_cache::Weighter<String, (i64, Arc<Inputs>)> for Weight {
    fn weight(&self, _key: &String, (_, inputs): &(i64, Arc<Inputs>)) -> u64 {
        (inputs.movements.len() + inputs.subscriptions.len()).max(1) as u64
    }
}

impl quick_cache::Weighter<AnswerKey, (i64, Bytes)> for Weight {
    fn weight(&self, _key: &AnswerKey, (_, answer): &(i64, Bytes)) -> u64 {
        answer.len() as u64 + 128
    }
}

impl Default for DashboardCache {
    fn default() -> Self {
        Self {
            inputs: quick_cache::sync::Cache::with_weighter(64, INPUTS_WEIGHT, Weight),
            answers: quick_cache::sync::Cache::with_weighter(1024, ANSWERS_BYTES, Weight),
        }
    }
}

impl DashboardCache {
    async fn inputs(
        &self,
        state: &AppState,
        business: &BusinessId,
        version: Option<i64>,
    ) -> Result<Arc<Inputs>, ApiError> {
        let Some(version) = version else {
            return Ok(Arc::new(load(state, business).await?));
        };
        let key = business.as_str().to_owned();
        // Twice at most: a stale entry is dropped, then one request loads under the guard
        // while the others wait for it.
        for _ in 0..2 {
            match self.inputs.get_value_or_guard_async(&key).await {
                // Computed at this version or a later one (read after ours): never older.
                Ok((at, inputs)) if at >= version => return Ok(inputs),
                Ok((at, _)) => {
                    self.inputs.remove_if(&key, |(cached, _)| *cached == at);
                }
                Err(guard) => {
                    // Read after the version: the rows are at least that new, never older.
                    let inputs = Arc::new(load(state, business).await?);
                    let _ = guard.insert((version, inputs.clone()));
                    return Ok(inputs);
                }
            }
        }
        Ok(Arc::new(load(state, business).await?))
    }
}

/// Answers one dashboard request from the cache, or computes it (and keeps it).
async fn answer(
    state: &AppState,
    business: &BusinessId,
    query: &RangeQuery,
    dashboard: Dashboard,
) -> Result<HttpResponse, ApiError> {
    let r = range(query)?;
    let version = access::data_version(&state.db, business).await?;
    let compute = async {
        let inputs = state.dashboards.inputs(state, business, version).await?;
        let body = match dashboard {
            Dashboard::Revenue => {
                let tl = timeline(state, business, &inputs, &r).await?;
                json!({
                    "currency": r.currency,
                    "months": metrics::revenue(&inputs.movements, &tl, &r.months),
                })
            }
            Dashboard::Retention => {
                let tl = timeline(state, business, &inputs, &r).await?;
                json!({
                    "currency": r.currency,
                    "months": metrics::retention(&tl, &r.months),
                    "cohorts": metrics::cohorts(&inputs.movements, &r.months),
                })
            }
            Dashboard::Acquisition => json!({
                "currency": r.currency,
                "months": metrics::acquisition(
                    &inputs.movements,
                    &inputs.subscriptions,
                    &r.currency,
                    &r.months
                ),
            }),
        };
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(ApiError::internal)
    };
    let body = match version {
        None => compute.await?,
        Some(version) => {
            let month = |m: Option<&Month>| m.map(ToString::to_string).unwrap_or_default();
            let key = (
                business.as_str().to_owned(),
                dashboard,
                month(r.months.first()),
                month(r.months.last()),
                r.currency.as_str().to_owned(),
                r.now.div_euclid(86_400),
            );
            match state.dashboards.answers.get(&key) {
                Some((at, body)) if at >= version => body,
                _ => {
                    let body = compute.await?;
                    state
                        .dashboards
                        .answers
                        .insert(key, (version, body.clone()));
                    body
                }
            }
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(actix_web::http::header::ContentType::json())
        .body(body))
}

/// Reads the inputs in one snapshot: the facts come in many statements (2,000 rows each) and
/// the subscriptions in another, and a write committed between them must not tear the view.
async fn load(state: &AppState, business: &BusinessId) -> Result<Inputs, ApiError> {
    let txn = state
        .db
        .begin_snapshot()
        .await
        .map_err(ApiError::internal)?;
    let (facts, _) = tributary_sync::readmodel::load_facts(&txn, business)
        .await
        .map_err(ApiError::internal)?;
    let subscriptions = reads::all_subscriptions(&txn, business)
        .await?
        .iter()
        .filter_map(history)
        .collect();
    txn.commit().await.map_err(ApiError::internal)?;
    Ok(Inputs {
        movements: spend::movements(&facts),
        subscriptions,
    })
}

/// A subscription's history for reconstruction; its MRR as if active, from its stored object.
fn history(s: &stripe_subscriptions::Model) -> Option<SubscriptionHistory> {
    let mut raw = s.raw.clone();
    if let Some(obj) = raw.as_object_mut() {
        obj.insert("status".into(), json!("active"));
    }
    let ended_at = s.ended_at.or(if s.status == "canceled" {
        s.canceled_at
    } else {
        None
    });
    Some(SubscriptionHistory {
        id: s.stripe_id.clone(),
        customer: s.customer.clone(),
        currency: Currency::parse(&s.currency).ok()?,
        started_at: s.start_date.unwrap_or(s.created),
        trial_end: s.trial_end,
        ended_at,
        active_mrr: tributary_sync::map::subscription_mrr(&raw),
        ever_paid: matches!(s.status.as_str(), "active" | "past_due" | "canceled"),
        activated: !matches!(s.status.as_str(), "incomplete" | "incomplete_expired"),
    })
}

async fn timeline(
    state: &AppState,
    business: &BusinessId,
    inputs: &Inputs,
    r: &Range,
) -> Result<MrrTimeline, ApiError> {
    let (Some(first), Some(last)) = (r.months.first(), r.months.last()) else {
        return Err(ApiError::bad_request("invalid_range", "the range is empty"));
    };
    let from_day = metrics::day_of(first.prev().start());
    let to_day = metrics::day_of(last.end() - 1);
    let snapshots = reads::mrr_snapshots_between(state.db.conn(), business, &from_day, &to_day)
        .await?
        .into_iter()
        .filter_map(|s| {
            Some(Snapshot {
                currency: Currency::parse(&s.currency).ok()?,
                day: s.day,
                subscription: s.subscription_id,
                customer: s.customer,
                status: s.status,
                mrr: s.mrr,
            })
        })
        .collect();
    Ok(MrrTimeline::new(
        &r.currency,
        inputs.subscriptions.clone(),
        snapshots,
        r.now,
    ))
}

/// `GET /api/businesses/{id}/revenue?from=YYYY-MM&to=YYYY-MM&currency=usd`.
#[utoipa::path(
    get,
    path = "/api/businesses/{id}/revenue",
    tag = "dashboards",
    summary = "Gross, refunds, net, MRR, ARR and active subscriptions per month",
    params(("id" = String, Path, description = "The business (a token must grant it)"), RangeQuery),
    responses(
        (status = 200, description = "The months of the range.", body = Revenue),
        (status = 400, description = "`invalid_month`, `invalid_range`, `invalid_currency`, \
            `invalid_query`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn revenue(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    answer(&state, &auth.business, &query, Dashboard::Revenue).await
}

/// `GET /api/businesses/{id}/retention?from&to&currency`.
#[utoipa::path(
    get,
    path = "/api/businesses/{id}/retention",
    tag = "dashboards",
    summary = "Subscriber churn, gross MRR churn, net revenue retention and cohorts",
    params(("id" = String, Path, description = "The business (a token must grant it)"), RangeQuery),
    responses(
        (status = 200, description = "The months of the range.", body = Retention),
        (status = 400, description = "`invalid_month`, `invalid_range`, `invalid_currency`, \
            `invalid_query`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn retention(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    answer(&state, &auth.business, &query, Dashboard::Retention).await
}

/// `GET /api/businesses/{id}/acquisition?from&to&currency`.
#[utoipa::path(
    get,
    path = "/api/businesses/{id}/acquisition",
    tag = "dashboards",
    summary = "New customers, new subscriptions and ARPU per month",
    params(("id" = String, Path, description = "The business (a token must grant it)"), RangeQuery),
    responses(
        (status = 200, description = "The months of the range.", body = Acquisition),
        (status = 400, description = "`invalid_month`, `invalid_range`, `invalid_currency`, \
            `invalid_query`.", body = Error),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub async fn acquisition(
    state: web::Data<AppState>,
    auth: AuthedBusiness,
    query: web::Query<RangeQuery>,
) -> Result<HttpResponse, ApiError> {
    answer(&state, &auth.business, &query, Dashboard::Acquisition).await
}
