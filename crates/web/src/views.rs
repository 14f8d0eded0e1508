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
    pub id: String,
    pub business_id: String,
    pub trigger: String,
    pub status: String,
    pub created_at: String,
    #[schema(required = true)]
    pub started_at: Option<String>,
    #[schema(required = true)]
    pub finished_at: Option<String>,
    #[schema(required = true)]
    pub error: Option<JobErrorView>,
    /// By resource: `{"customers": {"fetched", "written", "done"}, …}`.
    #[schema(value_type = std::collections::BTreeMap<String, crate::openapi::ResourceProgress>)]
    pub progress: serde_json::Value,
}

/// Why a job failed: `access_revoked`, `rate_limited`, `stripe_unavailable`, `database`, ….
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobErrorView {
    pub code: String,
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
    #[schema(required = true)]
    pub account_id: Option<String>,
    #[schema(required = true)]
    pub account_name: Option<String>,
    #[schema(required = true)]
    pub connected_at: Option<String>,
    #[schema(required = true)]
    pub last_sync: Option<JobView>,
    #[schema(required = true)]
    pub last_successful_sync_at: Option<String>,
}

impl StatusView {
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
    pub items: Vec<T>,
    pub page: u64,
    pub per_page: u64,
    pub total: u64,
}

/// A registered business.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BusinessView {
    pub id: String,
    pub slug: String,
    pub name: String,
    #[schema(required = true)]
    pub agency_id: Option<String>,
    pub created_at: String,
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
    pub business_id: String,
    pub account_id: String,
    #[schema(required = true)]
    pub account_name: Option<String>,
    /// `revoked` (the platform lost access) or `failing` (the latest sync failed).
    pub attention: &'static str,
    /// The connection's own status: `connected` or `revoked`.
    pub status: String,
    pub connected_at: String,
    #[schema(required = true)]
    pub revoked_at: Option<String>,
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
