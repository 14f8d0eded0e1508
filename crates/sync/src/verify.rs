//! The read-model consistency check behind `tributary-scheduler verify`: recompute
//! `customer_spend` from the mirror with the one implementation of SPEC §7 and compare it with
//! what is stored, row by row.

use std::collections::BTreeMap;

use tributary_domain::BusinessId;
use tributary_persistence::entities::customer_spend;
use tributary_persistence::reads;
use tributary_persistence::sea_orm::ConnectionTrait;

use crate::SyncError;
use crate::readmodel;

/// Rows compared and every difference found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verification {
    /// The business checked.
    pub business_id: String,
    /// Rows recomputed from the mirror.
    pub expected_rows: usize,
    /// Rows stored.
    pub stored_rows: usize,
    /// Every difference, one line each.
    pub differences: Vec<String>,
}

impl Verification {
    /// Whether the stored rows match the recomputed ones.
    pub fn is_consistent(&self) -> bool {
        self.differences.is_empty()
    }
}

/// The comparable part of a row (`updated_at` is when it was written, not what it says).
fn key(r: &customer_spend::Model) -> (String, String) {
    (r.email.clone(), r.currency.clone())
}

fn describe(r: &customer_spend::Model) -> String {
    format!(
        "gross {} refunded {} net {} orders {} first {} last {} primary {} email_orders {} email_last {} customers {} name {:?}",
        r.gross,
        r.refunded,
        r.net,
        r.order_count,
        r.first_purchase_at,
        r.last_purchase_at,
        r.is_primary,
        r.email_order_count,
        r.email_last_purchase_at,
        r.customer_ids,
        r.name
    )
}

/// Recomputes the business's `customer_spend` from its mirror and compares it with the stored
/// rows. Read-only.
pub async fn verify_spend<C: ConnectionTrait>(
    conn: &C,
    business: &BusinessId,
) -> Result<Verification, SyncError> {
    let now = tributary_persistence::now();
    let expected = readmodel::compute_spend(conn, business, now).await?;
    let stored = reads::all_spend(conn, business).await?;
    let mut out = Verification {
        business_id: business.as_str().to_owned(),
        expected_rows: expected.len(),
        stored_rows: stored.len(),
        differences: Vec::new(),
    };
    let mut have: BTreeMap<_, _> = stored.into_iter().map(|r| (key(&r), r)).collect();
    for mut want in expected {
        let k = key(&want);
        match have.remove(&k) {
            None => out.differences.push(format!(
                "{} {}: missing from customer_spend (expected {})",
                k.0,
                k.1,
                describe(&want)
            )),
            Some(got) => {
                want.updated_at = got.updated_at;
                if want != got {
                    out.differences.push(format!(
                        "{} {}: stored {} / expected {}",
                        k.0,
                        k.1,
                        describe(&got),
                        describe(&want)
                    ));
                }
            }
        }
    }
    for ((email, currency), got) in have {
        out.differences.push(format!(
            "{email} {currency}: stored ({}) but the mirror implies no such row",
            describe(&got)
        ));
    }
    Ok(out)
}
