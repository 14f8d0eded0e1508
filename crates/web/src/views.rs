//! JSON shapes of SPEC §4 and §10. The database keeps unix seconds; the API answers RFC 3339
//! UTC strings.

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use tributary_persistence::entities::{businesses, stripe_access, sync_jobs};

/// Unix seconds as RFC 3339 UTC (`2026-11-23T15:04:05Z`).
pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A sync job: `{"id", "business_id", "trigger", "status", "created_at", "started_at",
/// "finished_at", "error": null | {"code", "message"}, "progress": {"<resource>": {…}}}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    /// The job id (UUID v7).
    pub id: String,
    /// The business synced.
    pub business_id: String,
    /// `manual`, `scheduled`, `backfill` or `webhook`.
    pub trigger: String,
    /// `queued`, `running`, `succeeded` or `failed`.
    pub status: String,
    /// When it was queued.
    pub created_at: String,
    /// When a worker started it.
    #[schema(required = true)]
    pub started_at: Option<String>,
    /// When it finished.
    #[schema(required = true)]
    pub finished_at: Option<String>,
    /// Why it failed; `null` unless it did.
    #[schema(required = true)]
    pub error: Option<JobErrorView>,
    /// By resource: `{"customers": {"fetched", "written", "done"}, …}`.
    #[schema(value_type = std::collections::BTreeMap<String, crate::openapi::ResourceProgress>)]
    pub progress: serde_json::Value,
}

/// Why a job failed: `access_revoked`, `rate_limited`, `stripe_unavailable`, `database`, ….
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobErrorView {
    /// The error code.
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

impl From<sync_jobs::Model> for JobView {
    fn from(job: sync_jobs::Model) -> Self {
        let error = job.error_code.map(|code| JobErrorView {
            message: job.error_message.unwrap_or_else(|| code.clone()),
            code,
        });
        let progress = if job.progress.is_object() {
            job.progress
        } else {
            serde_json::json!({})
        };
        Self {
            id: job.id,
            business_id: job.business_id,
            trigger: job.trigger,
            status: job.status,
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            error,
            progress,
        }
    }
}

/// `GET /api/stripe/{businessId}/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatusView {
    /// `not_connected`, `connected` or `revoked`.
    pub status: String,
    /// The connected account (`acct_…`).
    #[schema(required = true)]
    pub account_id: Option<String>,
    /// The account's display name.
    #[schema(required = true)]
    pub account_name: Option<String>,
    /// When the account was linked.
    #[schema(required = true)]
    pub connected_at: Option<String>,
    /// The newest sync job.
    #[schema(required = true)]
    pub last_sync: Option<JobView>,
    /// When the newest successful sync finished.
    #[schema(required = true)]
    pub last_successful_sync_at: Option<String>,
}

impl StatusView {
    /// The status of a business from its `stripe_access` row and its newest and newest
    /// successful jobs.
    pub fn new(
        access: Option<stripe_access::Model>,
        last_sync: Option<sync_jobs::Model>,
        last_success: Option<sync_jobs::Model>,
    ) -> Self {
        let (status, account_id, account_name, connected_at) = match access {
            Some(a) => (
                a.status,
                Some(a.stripe_account_id),
                a.account_name,
                Some(rfc3339(a.date_created)),
            ),
            None => ("not_connected".to_owned(), None, None, None),
        };
        Self {
            status,
            account_id,
            account_name,
            connected_at,
            last_sync: last_sync.map(JobView::from),
            last_successful_sync_at: last_success
                .and_then(|j| j.finished_at.or(j.started_at))
                .map(rfc3339),
        }
    }
}

/// A page of items: `{"items", "page", "per_page", "total"}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PageView<T> {
    /// The page's items.
    pub items: Vec<T>,
    /// The page, from 1.
    pub page: u64,
    /// Items per page.
    pub per_page: u64,
    /// Items over all pages.
    pub total: u64,
}

/// A registered business.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BusinessView {
    /// The host application's business id.
    pub id: String,
    /// The URL slug (`[a-z0-9-]{2,63}`).
    pub slug: String,
    /// The display name.
    pub name: String,
    /// The agency the business belongs to.
    #[schema(required = true)]
    pub agency_id: Option<String>,
    /// When it was registered.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
}

impl From<businesses::Model> for BusinessView {
    fn from(b: businesses::Model) -> Self {
        Self {
            id: b.id,
            slug: b.slug,
            name: b.name,
            agency_id: b.agency_id,
            created_at: rfc3339(b.created_at),
            updated_at: rfc3339(b.updated_at),
        }
    }
}

/// One connection needing attention (`GET /api/admin/connections`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConnectionView {
    /// The business.
    pub business_id: String,
    /// The connected account (`acct_…`).
    pub account_id: String,
    /// The account's display name.
    #[schema(required = true)]
    pub account_name: Option<String>,
    /// `revoked` (the platform lost access) or `failing` (the latest sync failed).
    pub attention: &'static str,
    /// The connection's own status: `connected` or `revoked`.
    pub status: String,
    /// When the account was linked.
    pub connected_at: String,
    /// When access was revoked.
    #[schema(required = true)]
    pub revoked_at: Option<String>,
    /// The newest sync job.
    #[schema(required = true)]
    pub last_sync: Option<JobView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_446_245), "2026-11-23T15:04:05Z");
    }
}
