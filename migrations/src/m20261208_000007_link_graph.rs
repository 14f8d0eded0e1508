//! PostgreSQL: `tributary_link_graph`, which replaces `tributary_email_graph` (migration
//! `m20261207_000006_email_graph`) so that a webhook turn or a page of a sync walks the link
//! graph once instead of three times (SPEC §7; see `reads::spend_graph`).
//!
//! Two changes to the walk:
//! - **The seeded ids' links in both directions.** The first step also finds the objects that
//!   link to a seeded payment or invoice (invoices and sessions naming a seeded payment,
//!   payments and sessions naming a seeded invoice), not only through the seeded object's own
//!   row. For a seeded object that is live this finds nothing more (the next step would find
//!   them); for one that is deleted (or not mirrored) it is what still leads to the objects
//!   that named it, and so to the emails whose money it was. A seed of emails only
//!   (`stripe-info`'s walk, the second level) takes the first step without those lookups: a
//!   generic plan runs them even for empty lists, and `stripe-info` at 16 connections lost
//!   about a fifth of its requests per second to them.
//! - **A second level on request.** With `second_level`, the walk goes on from the emails it
//!   met (those of the seed's and the named customers, and of every payment, invoice and
//!   session found) that the seed did not hold, skipping what the first level found, whose
//!   links it has followed: the union of the walk from the seed and the walk from those
//!   emails, in one call. `emails` returns the emails met at the first level with the seed's:
//!   each of them has all its objects in what the call returns.
//!
//! Each step is still one statement per table with array parameters, on the same indexes.
//! SQLite has nothing to create: it walks round by round, in process.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

/// Creates `tributary_link_graph` and drops `tributary_email_graph` (PostgreSQL).
#[derive(Debug)]
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261208_000007_link_graph"
    }
}

const CREATE: &str = r#"
CREATE OR REPLACE FUNCTION tributary_link_graph(
    b text, seed_emails text[], seed_customers text[], seed_orders text[],
    seed_invoices text[], seed_sessions text[], second_level boolean,
    OUT customers text[], OUT orders text[], OUT invoices text[],
    OUT invoice_payments text[], OUT sessions text[], OUT refunds text[], OUT emails text[])
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
    -- Customers the objects found name, and the emails of what was found.
    named text[] := '{}';
    met text[] := '{}';
    -- This level's seed: emails, their (and the seeded) customers, ids.
    se text[] := seed_emails;
    cus text[];
    so text[] := seed_orders; si text[] := seed_invoices; ss text[] := seed_sessions;
    want_o text[]; want_i text[];
    level int := 1;
BEGIN
    customers := '{}'; orders := '{}'; invoices := '{}'; sessions := '{}';
    invoice_payments := '{}';
    SELECT coalesce(array_agg(t.stripe_id), '{}'), coalesce(array_agg(t.email), '{}')
      INTO cus, met FROM stripe_customers t
     WHERE t.business_id = b AND (t.email = ANY(se) OR t.stripe_id = ANY(seed_customers));
    LOOP
        customers := customers || cus;
        IF cardinality(so) + cardinality(si) + cardinality(ss) > 0 THEN
            SELECT array_agg(t.stripe_id), array_agg(t.invoice), named || array_agg(t.customer),
                   met || array_agg(t.email)
              INTO fo, fo_inv, named, met FROM stripe_orders t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.email = ANY(se) OR t.customer = ANY(cus) OR t.stripe_id = ANY(so)
                    OR t.invoice = ANY(si));
            SELECT array_agg(t.stripe_id), array_agg(t.payment_intent) || array_agg(t.charge),
                   named || array_agg(t.customer), met || array_agg(t.email)
              INTO fi, fi_pay, named, met FROM stripe_invoices t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.email = ANY(se) OR t.customer = ANY(cus) OR t.stripe_id = ANY(si)
                    OR t.payment_intent = ANY(so) OR t.charge = ANY(so));
            SELECT array_agg(t.stripe_id), array_agg(t.payment_intent), array_agg(t.invoice),
                   named || array_agg(t.customer), met || array_agg(t.email)
              INTO fs, fs_pi, fs_inv, named, met FROM stripe_checkout_sessions t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.email = ANY(se) OR t.customer = ANY(cus) OR t.stripe_id = ANY(ss)
                    OR t.payment_intent = ANY(so) OR t.invoice = ANY(si));
            SELECT array_agg(t.stripe_id), array_agg(t.invoice),
                   array_agg(t.payment_intent) || array_agg(t.charge)
              INTO fp, fp_inv, fp_pay FROM stripe_invoice_payments t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.payment_intent = ANY(so) OR t.charge = ANY(so) OR t.invoice = ANY(si));
        ELSE
            -- Emails only (stripe-info's walk, the second level): three lookups by email and
            -- customer, none of the id lists' (a generic plan cannot tell they are empty).
            SELECT array_agg(t.stripe_id), array_agg(t.invoice), named || array_agg(t.customer),
                   met || array_agg(t.email)
              INTO fo, fo_inv, named, met FROM stripe_orders t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.email = ANY(se) OR t.customer = ANY(cus))
               AND t.stripe_id <> ALL(orders);
            SELECT array_agg(t.stripe_id), array_agg(t.payment_intent) || array_agg(t.charge),
                   named || array_agg(t.customer), met || array_agg(t.email)
              INTO fi, fi_pay, named, met FROM stripe_invoices t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.email = ANY(se) OR t.customer = ANY(cus))
               AND t.stripe_id <> ALL(invoices);
            SELECT array_agg(t.stripe_id), array_agg(t.payment_intent), array_agg(t.invoice),
                   named || array_agg(t.customer), met || array_agg(t.email)
              INTO fs, fs_pi, fs_inv, named, met FROM stripe_checkout_sessions t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.email = ANY(se) OR t.customer = ANY(cus))
               AND t.stripe_id <> ALL(sessions);
            fp := NULL; fp_inv := NULL; fp_pay := NULL;
        END IF;
        LOOP
            orders := orders || fo;
            invoices := invoices || fi;
            sessions := sessions || fs;
            invoice_payments := invoice_payments || fp;
            EXIT WHEN fo IS NULL AND fi IS NULL AND fs IS NULL AND fp IS NULL;
            want_o := fi_pay || fs_pi || fp_pay;
            want_i := fo_inv || fs_inv || fp_inv;
            SELECT array_agg(t.stripe_id), array_agg(t.invoice), named || array_agg(t.customer),
                   met || array_agg(t.email)
              INTO no, no_inv, named, met FROM stripe_orders t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.stripe_id = ANY(want_o) OR t.invoice = ANY(fi))
               AND t.stripe_id <> ALL(orders);
            SELECT array_agg(t.stripe_id), array_agg(t.payment_intent) || array_agg(t.charge),
                   named || array_agg(t.customer), met || array_agg(t.email)
              INTO ni, ni_pay, named, met FROM stripe_invoices t
             WHERE t.business_id = b AND t.deleted = false
               AND (t.stripe_id = ANY(want_i) OR t.payment_intent = ANY(fo) OR t.charge = ANY(fo))
               AND t.stripe_id <> ALL(invoices);
            SELECT array_agg(t.stripe_id), array_agg(t.payment_intent), array_agg(t.invoice),
                   named || array_agg(t.customer), met || array_agg(t.email)
              INTO ns, ns_pi, ns_inv, named, met FROM stripe_checkout_sessions t
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
        EXIT WHEN level = 2 OR NOT second_level;
        -- The emails met at the first level: the seed's, its customers', the objects' and
        -- those of the customers the objects name.
        SELECT coalesce(array_agg(DISTINCT e), '{}') INTO emails FROM (
            SELECT unnest(met || seed_emails) AS e
            UNION ALL
            SELECT t.email FROM stripe_customers t
             WHERE t.business_id = b AND t.stripe_id = ANY(named)) x
         WHERE e IS NOT NULL;
        se := ARRAY(SELECT unnest(emails) EXCEPT SELECT unnest(seed_emails));
        EXIT WHEN cardinality(se) = 0;
        SELECT coalesce(array_agg(t.stripe_id), '{}') INTO cus FROM stripe_customers t
         WHERE t.business_id = b AND t.email = ANY(se);
        so := '{}'; si := '{}'; ss := '{}';
        level := 2;
    END LOOP;
    customers := customers || named;
    SELECT coalesce(array_agg(t.stripe_id), '{}') INTO refunds FROM stripe_refunds t
     WHERE t.business_id = b AND t.deleted = false
       AND (t.payment_intent = ANY(orders) OR t.charge = ANY(orders));
END
$walk$
"#;

/// The function's signature, for `DROP FUNCTION`.
const SIGNATURE: &str =
    "tributary_link_graph(text, text[], text[], text[], text[], text[], boolean)";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(CREATE).await?;
        db.execute_unprepared(&format!(
            "DROP FUNCTION IF EXISTS {}",
            super::m20261207_000006_email_graph::SIGNATURE
        ))
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(super::m20261207_000006_email_graph::CREATE)
            .await?;
        db.execute_unprepared(&format!("DROP FUNCTION IF EXISTS {SIGNATURE}"))
            .await?;
        Ok(())
    }
}
