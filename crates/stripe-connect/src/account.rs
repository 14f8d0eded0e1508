//! Retrieve by id, and the connected account's display name.

use serde_json::Value;
use stripe_client_core::StripeMethod;

use crate::client::AccountClient;
use crate::error::StripeError;
use crate::list::{FromRaw, Item, path_segment};

/// The name to show for a connected account (SPEC §5): `business_profile.name` →
/// `settings.dashboard.display_name` → `company.name` → individual first + last name → `email`.
/// Blank values are skipped.
pub fn account_display_name(account: &Value) -> Option<String> {
    let at = |path: &[&str]| -> Option<String> {
        let mut v = account;
        for k in path {
            v = v.get(k)?;
        }
        v.as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    at(&["business_profile", "name"])
        .or_else(|| at(&["settings", "dashboard", "display_name"]))
        .or_else(|| at(&["company", "name"]))
        .or_else(|| {
            let first = at(&["individual", "first_name"]);
            let last = at(&["individual", "last_name"]);
            match (first, last) {
                (Some(f), Some(l)) => Some(format!("{f} {l}")),
                (f, l) => f.or(l),
            }
        })
        .or_else(|| at(&["email"]))
}

impl AccountClient {
    /// `GET` one object at `path` (`/v1/…`), typed and raw.
    pub async fn retrieve<T: FromRaw>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Item<T>, StripeError> {
        let q = crate::client::encode_query(query);
        let bytes = self
            .request(StripeMethod::Get, path, Some(q), None, self.account.clone())
            .await?;
        let raw: Value = serde_json::from_slice(&bytes)
            .map_err(|e| StripeError::Deserialize(format!("{path}: {e}")))?;
        Ok(Item::from_raw(raw))
    }

    /// Re-fetch any mirrored object by its `object` type and id (as an event names them), raw.
    /// `Ok(None)` when the type is not one the sync mirrors.
    pub async fn retrieve_object(
        &self,
        object: &str,
        id: &str,
    ) -> Result<Option<Item<Value>>, StripeError> {
        match crate::event::retrieve_path(object, id) {
            Some(path) => self.retrieve(&path, &[]).await.map(Some),
            None => Ok(None),
        }
    }

    /// `GET /v1/account` for this client's connected account.
    pub async fn retrieve_account(&self) -> Result<Item<stripe_shared::Account>, StripeError> {
        self.retrieve("/v1/account", &[]).await
    }

    /// The account's display name (see [`account_display_name`]); `None` when it has none.
    pub async fn display_name(&self) -> Result<Option<String>, StripeError> {
        Ok(account_display_name(&self.retrieve_account().await?.raw))
    }

    /// `GET /v1/customers/{id}` (a deleted customer comes back as `{"deleted": true}`, raw only).
    pub async fn retrieve_customer(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::Customer>, StripeError> {
        self.retrieve(&format!("/v1/customers/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/products/{id}`.
    pub async fn retrieve_product(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::Product>, StripeError> {
        self.retrieve(&format!("/v1/products/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/prices/{id}`.
    pub async fn retrieve_price(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::Price>, StripeError> {
        self.retrieve(&format!("/v1/prices/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/payment_intents/{id}`.
    pub async fn retrieve_payment_intent(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::PaymentIntent>, StripeError> {
        self.retrieve(&format!("/v1/payment_intents/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/charges/{id}`.
    pub async fn retrieve_charge(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::Charge>, StripeError> {
        self.retrieve(&format!("/v1/charges/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/refunds/{id}`.
    pub async fn retrieve_refund(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::Refund>, StripeError> {
        self.retrieve(&format!("/v1/refunds/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/invoices/{id}`.
    pub async fn retrieve_invoice(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::Invoice>, StripeError> {
        self.retrieve(&format!("/v1/invoices/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/invoice_payments/{id}`.
    pub async fn retrieve_invoice_payment(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::InvoicePayment>, StripeError> {
        self.retrieve(&format!("/v1/invoice_payments/{}", path_segment(id)), &[])
            .await
    }

    /// `GET /v1/checkout/sessions/{id}` with `expand[]=line_items`.
    pub async fn retrieve_checkout_session(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::CheckoutSession>, StripeError> {
        self.retrieve(
            &format!("/v1/checkout/sessions/{}", path_segment(id)),
            &[("expand[]", "line_items")],
        )
        .await
    }

    /// `GET /v1/subscriptions/{id}` with `expand[]=discounts`.
    pub async fn retrieve_subscription(
        &self,
        id: &str,
    ) -> Result<Item<stripe_shared::Subscription>, StripeError> {
        self.retrieve(
            &format!("/v1/subscriptions/{}", path_segment(id)),
            &[("expand[]", "discounts")],
        )
        .await
    }

    /// `GET /v1/events/{id}`.
    pub async fn retrieve_event(
        &self,
        id: &str,
    ) -> Result<Item<crate::EventEnvelope>, StripeError> {
        self.retrieve(&format!("/v1/events/{}", path_segment(id)), &[])
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn display_name_order() {
        let full = json!({
            "business_profile": {"name": "Acme Shop"},
            "settings": {"dashboard": {"display_name": "acme"}},
            "company": {"name": "Acme Ltd"},
            "individual": {"first_name": "Ada", "last_name": "Lovelace"},
            "email": "ada@example.com"
        });
        assert_eq!(account_display_name(&full).as_deref(), Some("Acme Shop"));
        let mut v = full.clone();
        v["business_profile"]["name"] = json!("  ");
        assert_eq!(account_display_name(&v).as_deref(), Some("acme"));
        v["settings"] = json!(null);
        assert_eq!(account_display_name(&v).as_deref(), Some("Acme Ltd"));
        v.as_object_mut().expect("obj").remove("company");
        assert_eq!(account_display_name(&v).as_deref(), Some("Ada Lovelace"));
        v["individual"]["last_name"] = json!(null);
        assert_eq!(account_display_name(&v).as_deref(), Some("Ada"));
        v["individual"] = json!(null);
        assert_eq!(account_display_name(&v).as_deref(), Some("ada@example.com"));
        assert_eq!(account_display_name(&json!({"id": "acct_1"})), None);
    }
}
