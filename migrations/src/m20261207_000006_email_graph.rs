//! PostgreSQL: `tributary_email_graph`, the link-graph walk of `reads::graph` (SPEC §7) as one
//! function, so a walk is one round trip instead of one per table and step.
//!
//! It takes the business and the seed (emails, customer, payment, invoice and session ids, as
//! text arrays) and returns the ids of everything the walk reaches: the seed's customers and
//! those the objects reached name; the live payments, invoices, checkout sessions and invoice
//! payments linked to the seed, step by step until a step finds nothing new; the live refunds
//! of those payments. Each step is one statement per table with array parameters, as the
//! round-by-round walk sends them (the same indexes). The caller reads the rows by id in the
//! same statement. SQLite has nothing to create: it walks round by round, in process.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Creates `tributary_email_graph` (PostgreSQL).
#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000006_email_graph"
    }
}

/// The function's signature, for `DROP FUNCTION` (also by `m20261208_000007_link_graph`, which
/// replaces it).
pub(crate) const SIGNATURE: &str =
    "tributary_email_graph(text, text[], text[], text[], text[], text[])";

/// Creates the function (also the way back from `m20261208_000007_link_graph`).
pub(crate) const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION tributary_email_graph(
    b text, seed_emails text[], seed_customers text[], seed_orders text[],
    seed_invoices text[], seed_sessions text[],
    OUT customers text[], OUT orders text[], OUT invoices text[],
    OUT invoice_payments text[], OUT sessions text[], OUT refunds text[])
LANGUAGE plpgsql STABLE AS $walk$
DECLARE
    -- What the last step found (NULL: nothing), with the links the next step follows:
    -- payments' invoices, invoices' payment intents and charges, sessions' payment intents and
    -- invoices, invoice payments' invoices and payment intents or charges.
    fo text[]; fo_inv text[];
    fi text[]; fi_pay text[];
    fs text[]; fs_pi text[]; fs_inv text[];
    fp text[]; fp_inv text[]; fp_pay text[];
    -- This step's finds, before they become the last step's.
    no text[]; no_inv text[];
    ni text[]; ni_pay text[];
    ns text[]; ns_pi text[]; ns_inv text[];
    np text[]; np_inv text[]; np_pay text[];
    -- Customers the objects found name.
    named text[] := '{}';
    cus text[];
    want_o text[]; want_i text[];
BEGIN
    orders := '{}'; invoices := '{}'; sessions := '{}'; invoice_payments := '{}';
    SELECT coalesce(array_agg(t.stripe_id), '{}') INTO customers FROM stripe_customers t
     WHERE t.business_id = b AND (t.email = ANY(seed_emails) OR t.stripe_id = ANY(seed_customers));
    cus := customers;
    SELECT array_agg(t.stripe_id), array_agg(t.invoice), named || array_agg(t.customer)
      INTO fo, fo_inv, named FROM stripe_orders t
     WHERE t.business_id = b AND t.deleted = false
       AND (t.email = ANY(seed_emails) OR t.customer = ANY(cus) OR t.stripe_id = ANY(seed_orders));
    SELECT array_agg(t.stripe_id), array_agg(t.payment_intent) || array_agg(t.charge),
           named || array_agg(t.customer)
      INTO fi, fi_pay, named FROM stripe_invoices t
     WHERE t.business_id = b AND t.deleted = false
       AND (t.email = ANY(seed_emails) OR t.customer = ANY(cus) OR t.stripe_id = ANY(seed_invoices));
    SELECT array_agg(t.stripe_id), array_agg(t.payment_intent), array_agg(t.invoice),
           named || array_agg(t.customer)
      INTO fs, fs_pi, fs_inv, named FROM stripe_checkout_sessions t
     WHERE t.business_id = b AND t.deleted = false
       AND (t.email = ANY(seed_emails) OR t.customer = ANY(cus) OR t.stripe_id = ANY(seed_sessions));
    SELECT array_agg(t.stripe_id), array_agg(t.invoice), array_agg(t.payment_intent) || array_agg(t.charge)
      INTO fp, fp_inv, fp_pay FROM stripe_invoice_payments t
     WHERE t.business_id = b AND t.deleted = false
       AND (t.payment_intent = ANY(seed_orders) OR t.charge = ANY(seed_orders)
            OR t.invoice = ANY(seed_invoices));
    LOOP
        orders := orders || fo;
        invoices := invoices || fi;
        sessions := sessions || fs;
        invoice_payments := invoice_payments || fp;
        EXIT WHEN fo IS NULL AND fi IS NULL AND fs IS NULL AND fp IS NULL;
        want_o := fi_pay || fs_pi || fp_pay;
        want_i := fo_inv || fs_inv || fp_inv;
        SELECT array_agg(t.stripe_id), array_agg(t.invoice), named || array_agg(t.customer)
          INTO no, no_inv, named FROM stripe_orders t
         WHERE t.business_id = b AND t.deleted = false
           AND (t.stripe_id = ANY(want_o) OR t.invoice = ANY(fi))
           AND t.stripe_id <> ALL(orders);
        SELECT array_agg(t.stripe_id), array_agg(t.payment_intent) || array_agg(t.charge),
               named || array_agg(t.customer)
          INTO ni, ni_pay, named FROM stripe_invoices t
         WHERE t.business_id = b AND t.deleted = false
           AND (t.stripe_id = ANY(want_i) OR t.payment_intent = ANY(fo) OR t.charge = ANY(fo))
           AND t.stripe_id <> ALL(invoices);
        SELECT array_agg(t.stripe_id), array_agg(t.payment_intent), array_agg(t.invoice),
               named || array_agg(t.customer)
          INTO ns, ns_pi, ns_inv, named FROM stripe_checkout_sessions t
         WHERE t.business_id = b AND t.deleted = false
           AND (t.payment_intent = ANY(fo) OR t.invoice = ANY(fi))
           AND t.stripe_id <> ALL(sessions);
        SELECT array_agg(t.stripe_id), array_agg(t.invoice),
               array_agg(t.payment_intent) || array_agg(t.charge)
          INTO np, np_inv, np_pay FROM stripe_invoice_payments t
         WHERE t.business_id = b AND t.deleted = false
           AND (t.invoice = ANY(fi) OR t.payment_intent = ANY(fo) OR t.charge = ANY(fo))
           AND t.stripe_id <> ALL(invoice_payments);
        fo := no; fo_inv := no_inv;
        fi := ni; fi_pay := ni_pay;
        fs := ns; fs_pi := ns_pi; fs_inv := ns_inv;
        fp := np; fp_inv := np_inv; fp_pay := np_pay;
    END LOOP;
    customers := customers || named;
    SELECT coalesce(array_agg(t.stripe_id), '{}') INTO refunds FROM stripe_refunds t
     WHERE t.business_id = b AND t.deleted = false
       AND (t.payment_intent = ANY(orders) OR t.charge = ANY(orders));
END
$walk$
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(&format!("DROP FUNCTION IF EXISTS {SIGNATURE}"))
            .await?;
        Ok(())
    }
}
