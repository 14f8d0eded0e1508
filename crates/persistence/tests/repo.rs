//! Repository tests, each run on SQLite and on PostgreSQL (`name::sqlite`, `name::postgres`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use tributary_domain::{BusinessId, Slug, StripeAccountId};
use tributary_persistence::entities::{stripe_customers, stripe_invoices, webhook_events};
use tributary_persistence::testing::{Backend, TestDb};
use tributary_persistence::{
    Database, PersistenceError, Statistics, access, businesses, db_test, jobs, mirror,
    oauth_states, webhooks,
};

fn biz(id: &str) -> BusinessId {
    BusinessId::parse(id).unwrap()
}

fn customer(business: &str, id: &str, email: &str, last_event_at: i64) -> stripe_customers::Model {
    stripe_customers::Model {
        business_id: business.into(),
        stripe_id: id.into(),
        email: Some(email.into()),
        name: Some(format!("name of {id}")),
        currency: Some("usd".into()),
        raw: json!({"id": id, "object": "customer", "email": email}),
        livemode: false,
        created: 1_700_000_000,
        deleted: false,
        last_event_at,
        synced_at: last_event_at,
    }
}

async fn scalar(db: &Database, sql: &str) -> Vec<String> {
    scalar_on(db.conn(), sql).await
}

/// The first column of every row `sql` gives on `conn`, as text.
async fn scalar_on<C: ConnectionTrait>(conn: &C, sql: &str) -> Vec<String> {
    let backend = conn.get_database_backend();
    conn.query_all_raw(Statement::from_string(backend, sql.to_owned()))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect()
}

db_test!(migrations_create_every_table, |t| {
    let sql = match t.backend {
        Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
        Backend::Postgres => "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
    };
    let tables = scalar(&t.db, sql).await;
    for table in tributary_migrations::TABLES {
        assert!(
            tables.iter().any(|t| t == table),
            "missing table {table}; have {tables:?}"
        );
    }
    if t.backend == Backend::Postgres {
        for table in tributary_migrations::MIRROR_TABLES {
            let ty = scalar(
                &t.db,
                &format!(
                    "SELECT data_type::text FROM information_schema.columns \
                     WHERE table_name = '{table}' AND column_name = 'raw'"
                ),
            )
            .await;
            assert_eq!(ty, vec!["jsonb".to_owned()], "{table}.raw");
        }
        // Objects are compressed with lz4 (`m20261202_000005_lz4_json`; the server here has it).
        let objects = tributary_migrations::MIRROR_TABLES
            .iter()
            .map(|t| (*t, "raw"))
            .chain([("webhook_events", "payload")]);
        for (table, column) in objects {
            let method = scalar(
                &t.db,
                &format!(
                    "SELECT attcompression::text FROM pg_attribute \
                     WHERE attrelid = '{table}'::regclass AND attname = '{column}'"
                ),
            )
            .await;
            assert_eq!(method, vec!["l".to_owned()], "{table}.{column}");
        }
    }
    // Running the migrations again is a no-op.
    t.db.migrate().await.unwrap();
});

db_test!(
    mirror_upsert_keeps_the_newer_version_and_never_duplicates,
    |t| {
        let db = &t.db;
        let b = biz("biz_1");
        let rows = vec![
            customer("biz_1", "cus_1", "a@x.io", 100),
            customer("biz_1", "cus_2", "b@x.io", 100),
            // The same object twice in one page: the newest version wins.
            customer("biz_1", "cus_1", "a2@x.io", 150),
        ];
        assert_eq!(
            mirror::upsert::<stripe_customers::Entity, _>(db.conn(), &b, rows)
                .await
                .unwrap(),
            2
        );

        // An older version does not overwrite the stored one.
        mirror::upsert::<stripe_customers::Entity, _>(
            db.conn(),
            &b,
            vec![customer("biz_1", "cus_1", "old@x.io", 120)],
        )
        .await
        .unwrap();
        let c1 = mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, "cus_1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c1.email.as_deref(), Some("a2@x.io"));
        assert_eq!(c1.raw["email"], "a2@x.io");

        // A newer (or equally new) one does.
        mirror::upsert::<stripe_customers::Entity, _>(
            db.conn(),
            &b,
            vec![customer("biz_1", "cus_1", "new@x.io", 150)],
        )
        .await
        .unwrap();
        let c1 = mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, "cus_1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c1.email.as_deref(), Some("new@x.io"));
        assert_eq!(
            mirror::all::<stripe_customers::Entity, _>(db.conn(), &b)
                .await
                .unwrap()
                .len(),
            2
        );

        // Same stripe id in another business is another row, invisible through biz_1.
        let b2 = biz("biz_2");
        mirror::upsert::<stripe_customers::Entity, _>(
            db.conn(),
            &b2,
            vec![customer("biz_2", "cus_1", "z@x.io", 1)],
        )
        .await
        .unwrap();
        let c1 = mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, "cus_1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c1.email.as_deref(), Some("new@x.io"));
        assert_eq!(
            mirror::count_live::<stripe_customers::Entity, _>(db.conn(), &b2)
                .await
                .unwrap(),
            1
        );

        // Writing another tenant's row through this business is refused, and nothing is written.
        let err = mirror::upsert::<stripe_customers::Entity, _>(
            db.conn(),
            &b,
            vec![
                customer("biz_1", "cus_9", "q@x.io", 1),
                customer("biz_2", "cus_8", "q@x.io", 1),
            ],
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PersistenceError::Scope(_)), "{err}");
        assert!(
            mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, "cus_9")
                .await
                .unwrap()
                .is_none()
        );
    }
);

db_test!(mirror_rows_round_trip_every_value_exactly, |t| {
    // Strings JSON must escape, nulls, the extremes of i64, raw given as a tree or as text:
    // what is written is what is read, whichever way the page was sent.
    let db = &t.db;
    let b = biz("biz_1");
    let awkward = "quote \" backslash \\ tab \t newline \n é 中 😀 \u{7f} </script>";
    let mut tree = customer("biz_1", "cus_tree", "a@x.io", i64::MAX);
    tree.name = Some(awkward.into());
    tree.currency = None;
    tree.created = i64::MIN;
    tree.raw = json!({"id": "cus_tree", "name": awkward, "n": 1.5, "big": 9_007_199_254_740_993_i64,
        "nested": {"list": [1, null, "x"], "empty": {}}});
    let written = mirror::upsert::<stripe_customers::Entity, _>(db.conn(), &b, vec![tree.clone()])
        .await
        .unwrap();
    assert_eq!(written, 1);
    let back = mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, "cus_tree")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, tree);

    let mut text = customer("biz_1", "cus_text", "b@x.io", 7);
    text.email = None;
    text.name = Some(awkward.into());
    let raw = r#"{"id": "cus_text",  "name": "as \"sent\"", "deleted": false}"#;
    let row = mirror::Text {
        row: text.clone(),
        raw: raw.to_owned(),
    };
    mirror::upsert_text::<stripe_customers::Entity, _>(db.conn(), &b, vec![row])
        .await
        .unwrap();
    let back = mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, "cus_text")
        .await
        .unwrap()
        .unwrap();
    text.raw = serde_json::from_str(raw).unwrap();
    assert_eq!(back, text);

    // On PostgreSQL (`jsonb`) a row's raw that is not JSON is refused, and nothing of its page
    // is written; SQLite stores JSON as text and does not check it.
    if t.backend == Backend::Postgres {
        let page = ["{not json", r#"{"id": "cus_good"}"#].map(|raw| mirror::Text {
            row: customer(
                "biz_1",
                if raw.contains("good") {
                    "cus_good"
                } else {
                    "cus_bad"
                },
                "c@x.io",
                1,
            ),
            raw: raw.to_owned(),
        });
        let err = mirror::upsert_text::<stripe_customers::Entity, _>(db.conn(), &b, page.into())
            .await
            .unwrap_err();
        assert!(matches!(err, PersistenceError::Db(_)), "{err}");
        for id in ["cus_good", "cus_bad"] {
            let row = mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, id).await;
            assert!(row.unwrap().is_none(), "{id} written");
        }
    }
});

db_test!(deletions_respect_newer_versions_and_reconciliation, |t| {
    let db = &t.db;
    let b = biz("biz_1");
    let rows = (1..=4)
        .map(|i| customer("biz_1", &format!("cus_{i}"), "a@x.io", 100))
        .collect();
    mirror::upsert::<stripe_customers::Entity, _>(db.conn(), &b, rows)
        .await
        .unwrap();

    // A deletion event older than the stored version changes nothing.
    let n =
        mirror::mark_deleted::<stripe_customers::Entity, _>(db.conn(), &b, &["cus_1".into()], 90)
            .await
            .unwrap();
    assert_eq!(n, 0);
    let n =
        mirror::mark_deleted::<stripe_customers::Entity, _>(db.conn(), &b, &["cus_1".into()], 110)
            .await
            .unwrap();
    assert_eq!(n, 1);
    assert!(
        mirror::find::<stripe_customers::Entity, _>(db.conn(), &b, "cus_1")
            .await
            .unwrap()
            .unwrap()
            .deleted
    );

    // A full re-list starting at 200 saw cus_2 only: cus_3 and cus_4 vanished from Stripe.
    mirror::upsert::<stripe_customers::Entity, _>(
        db.conn(),
        &b,
        vec![customer("biz_1", "cus_2", "a@x.io", 200)],
    )
    .await
    .unwrap();
    let n = mirror::mark_unseen_deleted::<stripe_customers::Entity, _>(db.conn(), &b, 200)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert_eq!(
        mirror::count_live::<stripe_customers::Entity, _>(db.conn(), &b)
            .await
            .unwrap(),
        1
    );
});

db_test!(businesses_register_rename_and_refuse_taken_slugs, |t| {
    let db = &t.db;
    let slug = Slug::parse("acme").unwrap();
    businesses::upsert(db, &biz("b1"), &slug, "Acme", None, 10)
        .await
        .unwrap();
    let renamed = businesses::upsert(db, &biz("b1"), &slug, "Acme Ltd", None, 20)
        .await
        .unwrap();
    assert_eq!(
        (
            renamed.name.as_str(),
            renamed.created_at,
            renamed.updated_at
        ),
        ("Acme Ltd", 10, 20)
    );
    let err = businesses::upsert(db, &biz("b2"), &slug, "Other", None, 30)
        .await
        .unwrap_err();
    assert!(matches!(err, PersistenceError::Conflict("slug")), "{err}");
    assert_eq!(
        businesses::by_slug(db, "acme").await.unwrap().unwrap().id,
        "b1"
    );
    assert!(businesses::delete(db, &biz("b1")).await.unwrap());
    assert!(businesses::get(db, &biz("b1")).await.unwrap().is_none());
});

db_test!(
    access_links_one_account_per_business_and_relinking_clears_mirrors,
    |t| {
        let db = &t.db;
        let acct1 = StripeAccountId::parse("acct_1").unwrap();
        let acct2 = StripeAccountId::parse("acct_2").unwrap();
        let new = |account| access::NewConnection {
            account,
            account_name: Some("Shop"),
            livemode: false,
            scope: "read_write",
        };
        assert_eq!(
            access::connect(db, &biz("b1"), new(&acct1), 10)
                .await
                .unwrap(),
            access::Connected::Linked
        );
        // Another business cannot take the same account.
        let err = access::connect(db, &biz("b2"), new(&acct1), 11)
            .await
            .unwrap_err();
        assert!(matches!(err, PersistenceError::Conflict("stripe account")));
        // Reconnecting the same account keeps the mirror.
        mirror::upsert::<stripe_customers::Entity, _>(
            db.conn(),
            &biz("b1"),
            vec![customer("b1", "cus_1", "a@x.io", 1)],
        )
        .await
        .unwrap();
        assert_eq!(
            access::connect(db, &biz("b1"), new(&acct1), 12)
                .await
                .unwrap(),
            access::Connected::Linked
        );
        assert_eq!(
            mirror::count_live::<stripe_customers::Entity, _>(db.conn(), &biz("b1"))
                .await
                .unwrap(),
            1
        );
        // Linking a different account clears the old account's rows first.
        let out = access::connect(db, &biz("b1"), new(&acct2), 13)
            .await
            .unwrap();
        assert_eq!(
            out,
            access::Connected::Relinked {
                previous: "acct_1".into()
            }
        );
        assert_eq!(
            mirror::count_live::<stripe_customers::Entity, _>(db.conn(), &biz("b1"))
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            access::by_account(db, "acct_2")
                .await
                .unwrap()
                .unwrap()
                .business_id,
            "b1"
        );
        assert!(access::by_account(db, "acct_1").await.unwrap().is_none());

        assert!(access::mark_revoked(db, &biz("b1"), 20).await.unwrap());
        let row = access::get(db, &biz("b1")).await.unwrap().unwrap();
        assert_eq!(
            (row.status.as_str(), row.revoked_at),
            (access::REVOKED, Some(20))
        );
        assert!(
            !access::mark_revoked(db, &biz("b1"), 21).await.unwrap(),
            "already revoked"
        );
        // Reconnecting restores the connection.
        access::connect(db, &biz("b1"), new(&acct2), 30)
            .await
            .unwrap();
        assert_eq!(
            access::get(db, &biz("b1")).await.unwrap().unwrap().status,
            access::CONNECTED
        );
    }
);

db_test!(oauth_states_are_one_time_and_expire, |t| {
    let db = &t.db;
    oauth_states::create(db, "n1", &biz("b1"), "agency", "user_1", 100, 600)
        .await
        .unwrap();
    oauth_states::create(db, "n2", &biz("b1"), "client", "user_1", 100, 600)
        .await
        .unwrap();
    let used = oauth_states::consume(db, "n1", 200).await.unwrap().unwrap();
    assert_eq!(
        (
            used.business_id.as_str(),
            used.portal.as_str(),
            used.used_at
        ),
        ("b1", "agency", Some(200))
    );
    assert!(
        oauth_states::consume(db, "n1", 201)
            .await
            .unwrap()
            .is_none(),
        "replayed"
    );
    assert!(
        oauth_states::consume(db, "n2", 700)
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(
        oauth_states::consume(db, "unknown", 200)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(oauth_states::prune(db, 800).await.unwrap(), 2);
});

db_test!(jobs_one_run_per_business_through_the_lease, |t| {
    let db = &t.db;
    let b = biz("b1");
    let (job, created) = jobs::enqueue(db, &b, "manual", false, 100).await.unwrap();
    assert!(created);
    let (joined, created) = jobs::enqueue(db, &b, "scheduled", false, 101)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(joined.id, job.id);

    assert!(jobs::claim(db, &job.id, "worker-a", 100, 30).await.unwrap());
    assert!(
        !jobs::claim(db, &job.id, "worker-b", 110, 30).await.unwrap(),
        "lease held by a"
    );
    assert!(
        jobs::claim_next(db, "worker-b", 110, 30)
            .await
            .unwrap()
            .is_none()
    );
    assert!(jobs::renew(db, &job.id, "worker-a", 120, 30).await.unwrap());
    assert!(!jobs::renew(db, &job.id, "worker-b", 120, 30).await.unwrap());
    assert!(
        jobs::set_progress(
            db,
            &job.id,
            "worker-a",
            json!({"customers": {"fetched": 3, "written": 3, "done": true}})
        )
        .await
        .unwrap()
    );

    // worker-a dies: after expiry (120 + 30) worker-b takes the job over, and is told from whom.
    let (taken, previous) = jobs::claim_next_taking_over(db, "worker-b", 151, 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(previous.as_deref(), Some("worker-a"));
    assert_eq!(
        (
            taken.id.as_str(),
            taken.lease_owner.as_deref(),
            taken.started_at
        ),
        (job.id.as_str(), Some("worker-b"), Some(100))
    );
    assert!(
        !jobs::renew(db, &job.id, "worker-a", 152, 30).await.unwrap(),
        "a lost its lease"
    );
    assert!(
        !jobs::finish(db, &job.id, "worker-a", jobs::SUCCEEDED, None, 152)
            .await
            .unwrap()
    );
    assert!(
        jobs::finish(db, &job.id, "worker-b", jobs::SUCCEEDED, None, 160)
            .await
            .unwrap()
    );

    // A new trigger after completion creates a new job; a deauthorization fails it from outside.
    let (second, created) = jobs::enqueue(db, &b, "webhook", true, 200).await.unwrap();
    assert!(created && second.id != job.id);
    assert!(
        jobs::claim(db, &second.id, "worker-a", 200, 30)
            .await
            .unwrap()
    );
    assert_eq!(
        jobs::fail_active(db, &b, "access_revoked", "deauthorized", 201)
            .await
            .unwrap(),
        1
    );
    assert!(
        !jobs::renew(db, &second.id, "worker-a", 202, 30)
            .await
            .unwrap()
    );
    let failed = jobs::get(db, &b, &second.id).await.unwrap().unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error_code.as_deref()),
        (jobs::FAILED, Some("access_revoked"))
    );

    let (list, total) = jobs::list(db, &b, 10, 0).await.unwrap();
    assert_eq!(total, 2);
    assert_eq!(list[0].id, second.id, "newest first");
    assert!(
        jobs::get(db, &biz("other"), &job.id)
            .await
            .unwrap()
            .is_none(),
        "scoped by business"
    );
    assert_eq!(
        jobs::latest_with_status(db, &b, jobs::SUCCEEDED)
            .await
            .unwrap()
            .unwrap()
            .id,
        job.id
    );
});

db_test!(concurrent_enqueues_create_one_job, |t| {
    let b = biz("b1");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let db = t.db.clone();
            let b = b.clone();
            tokio::spawn(async move {
                jobs::enqueue(&db, &b, "manual", false, 100 + i)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    let mut created = 0;
    for task in tasks {
        let (job, c) = task.await.unwrap();
        ids.insert(job.id);
        created += usize::from(c);
    }
    assert_eq!((ids.len(), created), (1, 1));
});

db_test!(webhook_events_are_recorded_once, |t| {
    let db = &t.db;
    let event = webhook_events::Model {
        endpoint: "connect".into(),
        event_id: "evt_1".into(),
        business_id: Some("b1".into()),
        event_type: "customer.updated".into(),
        account: Some("acct_1".into()),
        livemode: false,
        received_at: 5,
        processed_at: Some(5),
        outcome: "applied".into(),
        payload: None,
    };
    assert!(
        webhooks::record_event(db.conn(), event.clone())
            .await
            .unwrap()
    );
    assert!(
        !webhooks::record_event(db.conn(), event.clone())
            .await
            .unwrap(),
        "duplicate"
    );
    let other_endpoint = webhook_events::Model {
        endpoint: "acme".into(),
        ..event
    };
    assert!(
        webhooks::record_event(db.conn(), other_endpoint)
            .await
            .unwrap()
    );

    webhooks::set_secret(db, &biz("b1"), "whsec_a", 1)
        .await
        .unwrap();
    webhooks::set_secret(db, &biz("b1"), "whsec_b", 2)
        .await
        .unwrap();
    assert_eq!(
        webhooks::secret(db, &biz("b1")).await.unwrap().as_deref(),
        Some("whsec_b")
    );
});

db_test!(purge_removes_every_row_of_one_business_only, |t| {
    let db = &t.db;
    let slug = |s: &str| Slug::parse(s).unwrap();
    for (id, acct) in [("b1", "acct_1"), ("b2", "acct_2")] {
        let b = biz(id);
        businesses::upsert(db, &b, &slug(&format!("slug-{id}")), id, None, 1)
            .await
            .unwrap();
        let account = StripeAccountId::parse(acct).unwrap();
        access::connect(
            db,
            &b,
            access::NewConnection {
                account: &account,
                account_name: None,
                livemode: false,
                scope: "read_write",
            },
            1,
        )
        .await
        .unwrap();
        oauth_states::create(db, &format!("nonce-{id}"), &b, "agency", "u", 1, 600)
            .await
            .unwrap();
        jobs::enqueue(db, &b, "manual", false, 1).await.unwrap();
        webhooks::set_secret(db, &b, "whsec_x", 1).await.unwrap();
        mirror::upsert::<stripe_customers::Entity, _>(
            db.conn(),
            &b,
            vec![customer(id, "cus_1", "a@x.io", 1)],
        )
        .await
        .unwrap();
        let invoice = stripe_invoices::Model {
            business_id: id.into(),
            stripe_id: "in_1".into(),
            customer: Some("cus_1".into()),
            email: None,
            status: "paid".into(),
            currency: "usd".into(),
            amount_due: 100,
            amount_paid: 100,
            amount_remaining: 0,
            total: 100,
            subscription: None,
            payment_intent: None,
            charge: None,
            paid_at: Some(1),
            number: None,
            raw: json!({}),
            livemode: false,
            created: 1,
            deleted: false,
            last_event_at: 1,
            synced_at: 1,
        };
        mirror::upsert::<stripe_invoices::Entity, _>(db.conn(), &b, vec![invoice])
            .await
            .unwrap();
        let backend = db.conn().get_database_backend();
        for sql in [
            format!(
                "INSERT INTO sync_cursors (business_id, resource, last_successful_date) VALUES ('{id}', 'customers', 1)"
            ),
            format!(
                "INSERT INTO customer_spend (business_id, email, currency, gross, refunded, net, order_count, first_purchase_at, last_purchase_at, customer_ids, is_primary, email_order_count, email_last_purchase_at, updated_at) VALUES ('{id}', 'a@x.io', 'usd', 1, 0, 1, 1, 1, 1, '[]', {t}, 1, 1, 1)",
                t = if backend == sea_orm::DbBackend::Postgres {
                    "TRUE"
                } else {
                    "1"
                }
            ),
            format!(
                "INSERT INTO mrr_snapshots (business_id, subscription_id, day, status, currency, mrr) VALUES ('{id}', 'sub_1', '2026-11-23', 'active', 'usd', 1)"
            ),
            format!(
                "INSERT INTO webhook_events (endpoint, event_id, business_id, event_type, livemode, received_at, outcome) VALUES ('connect', 'evt_{id}', '{id}', 'x', {f}, 1, 'applied')",
                f = if backend == sea_orm::DbBackend::Postgres {
                    "FALSE"
                } else {
                    "0"
                }
            ),
        ] {
            db.conn().execute_unprepared(&sql).await.unwrap();
        }
    }
    let count = |table: &str, id: &str| {
        format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE business_id = '{id}'")
    };
    let tables: Vec<&str> = tributary_migrations::TABLES
        .iter()
        .copied()
        .filter(|t| !matches!(*t, "businesses" | "agency_billing"))
        .collect();
    let mut before = Vec::new();
    for table in &tables {
        before.push(scalar(db, &count(table, "b2")).await);
    }
    let populated = [
        "stripe_access",
        "oauth_states",
        "sync_jobs",
        "sync_cursors",
        "stripe_customers",
        "stripe_invoices",
        "customer_spend",
        "mrr_snapshots",
        "webhook_endpoints",
        "webhook_events",
    ];
    for table in populated {
        assert_eq!(
            scalar(db, &count(table, "b1")).await,
            vec!["1"],
            "{table} was not populated"
        );
    }

    db.purge_business(&biz("b1")).await.unwrap();

    for (table, before) in tables.iter().zip(before) {
        assert_eq!(
            scalar(db, &count(table, "b1")).await,
            vec!["0"],
            "{table} still has rows of b1"
        );
        assert_eq!(
            scalar(db, &count(table, "b2")).await,
            before,
            "{table} lost rows of b2"
        );
    }
    assert!(
        businesses::get(db, &biz("b1")).await.unwrap().is_some(),
        "the business itself stays"
    );
});

db_test!(data_version_moves_with_every_write_and_never_repeats, |t| {
    let db = &t.db;
    let b = biz("b1");
    let acct = StripeAccountId::parse("acct_v").unwrap();
    let conn = || access::NewConnection {
        account: &acct,
        account_name: None,
        livemode: false,
        scope: "read_write",
    };
    assert_eq!(access::data_version(db, &b).await.unwrap(), None);
    access::connect(db, &b, conn(), 10).await.unwrap();
    let v0 = access::data_version(db, &b).await.unwrap().unwrap();

    // The exclusive lock bumps it (and reads the row it locked); the shared one does not.
    let txn = db.begin_write().await.unwrap();
    let row = access::lock_for_write(&txn, &b, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.data_version, v0 + 1);
    txn.commit().await.unwrap();
    let txn = db.begin_write().await.unwrap();
    let row = access::lock_for_write(&txn, &b, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.data_version, v0 + 1);
    access::bump_version(&txn, &b).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(access::data_version(db, &b).await.unwrap(), Some(v0 + 2));

    // A rolled-back write leaves it as it was.
    let txn = db.begin_write().await.unwrap();
    access::lock_for_write(&txn, &b, true).await.unwrap();
    txn.rollback().await.unwrap();
    assert_eq!(access::data_version(db, &b).await.unwrap(), Some(v0 + 2));

    // Disconnected and linked again: a version no earlier link used.
    db.purge_business(&b).await.unwrap();
    assert_eq!(access::data_version(db, &b).await.unwrap(), None);
    access::connect(db, &b, conn(), 20).await.unwrap();
    let again = access::data_version(db, &b).await.unwrap().unwrap();
    assert!(again > v0 + 2, "{again} after {v0} + 2");
});

db_test!(spend_snapshot_answers_as_the_database, |t| {
    use sea_orm::EntityTrait;
    use tributary_persistence::entities::customer_spend;
    use tributary_persistence::reads::{self, SpendQuery, SpendSnapshot, SpendSort};
    let db = &t.db;
    let b = biz("biz_snap");
    let other = biz("biz_other");
    // Emails whose order depends on punctuation, ties in net and in last purchase, several
    // currencies with the primary one varying, and a second business that must not leak in.
    let prefixes = ["a.", "a-", "ab", "a_", "b+", "0"];
    let mut rows = Vec::new();
    for i in 0..60_i64 {
        let email = format!("{}{}@x.io", prefixes[i as usize % prefixes.len()], i % 17);
        if rows
            .iter()
            .any(|r: &customer_spend::Model| r.email == email)
        {
            continue;
        }
        let currencies: Vec<&str> = ["usd", "eur", "gbp"]
            .into_iter()
            .enumerate()
            .filter(|(k, _)| *k == 0 || i % (2 + *k as i64) == 0)
            .map(|(_, c)| c)
            .collect();
        let primary = currencies[i as usize % currencies.len()];
        for c in &currencies {
            let net = (i % 4) * 100 + if *c == "eur" { 7 } else { 0 };
            rows.push(customer_spend::Model {
                business_id: b.as_str().into(),
                email: email.clone(),
                currency: (*c).into(),
                gross: net + 5,
                refunded: 5,
                net,
                order_count: 1 + i % 3,
                first_purchase_at: 1_700_000_000,
                last_purchase_at: 1_700_000_000 + i % 5,
                customer_ids: json!([format!("cus_{i}")]),
                name: (i % 2 == 0).then(|| format!("Name {i}")),
                is_primary: *c == primary,
                email_order_count: 1 + i % 3,
                email_last_purchase_at: 1_700_000_000 + i % 5,
                updated_at: 1,
            });
        }
    }
    let mut foreign = rows[0].clone();
    foreign.business_id = other.as_str().into();
    foreign.email = "zz@x.io".into();
    let models: Vec<customer_spend::ActiveModel> = rows
        .iter()
        .cloned()
        .chain([foreign])
        .map(Into::into)
        .collect();
    customer_spend::Entity::insert_many(models)
        .exec_without_returning(db.conn())
        .await
        .unwrap();

    let snapshot = SpendSnapshot::load(db.conn(), &b).await.unwrap();
    assert_eq!(snapshot.len(), rows.len());
    let mut pages_compared = 0;
    for sort in [
        SpendSort::TotalSpent,
        SpendSort::LastPurchase,
        SpendSort::Email,
    ] {
        for descending in [true, false] {
            for currency in [None, Some("usd"), Some("eur"), Some("gbp"), Some("jpy")] {
                for page in 1..=8 {
                    let q = SpendQuery {
                        page,
                        per_page: 7,
                        sort,
                        descending,
                        search: None,
                        currency: currency.map(|c| tributary_domain::Currency::parse(c).unwrap()),
                    };
                    let from_db = reads::spend_page(db.conn(), &b, &q).await.unwrap();
                    let (emails, total) = snapshot.page(&q).unwrap();
                    assert_eq!(
                        emails, from_db.emails,
                        "{sort:?} desc={descending} {currency:?} page {page}"
                    );
                    assert_eq!(total, from_db.total);
                    pages_compared += usize::from(!emails.is_empty());
                }
            }
        }
    }
    assert!(
        pages_compared > 100,
        "only {pages_compared} non-empty pages"
    );
    let mut emails: Vec<String> = rows.iter().map(|r| r.email.clone()).collect();
    emails.dedup();
    emails.push("nobody@x.io".into());
    emails.push("zz@x.io".into());
    let from_db = reads::spend_of_emails(db.conn(), &b, &emails)
        .await
        .unwrap();
    for e in &emails {
        assert_eq!(
            snapshot.of_email(e),
            from_db.get(e).map_or(&[][..], Vec::as_slice),
            "{e}"
        );
    }
    assert!(snapshot.of_email("zz@x.io").is_empty());
    // A search is the database's.
    let search = SpendQuery {
        page: 1,
        per_page: 7,
        sort: SpendSort::Email,
        descending: false,
        search: Some("a.".into()),
        currency: None,
    };
    assert!(snapshot.page(&search).is_none());
});

db_test!(a_snapshot_reads_one_view_across_statements, |t| {
    use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};
    let db = &t.db;
    let b = biz("biz_snapshot");
    let rows = vec![customer("biz_snapshot", "cus_1", "a@x.io", 100)];
    mirror::upsert::<stripe_customers::Entity, _>(db.conn(), &b, rows)
        .await
        .unwrap();
    async fn count<C: sea_orm::ConnectionTrait>(conn: &C) -> u64 {
        stripe_customers::Entity::find().count(conn).await.unwrap()
    }

    let snapshot = db.begin_snapshot().await.unwrap();
    assert_eq!(count(&snapshot).await, 1);
    // Another connection commits a row and changes the first one meanwhile.
    let other = db.conn().begin().await.unwrap();
    mirror::upsert::<stripe_customers::Entity, _>(
        &other,
        &b,
        vec![
            customer("biz_snapshot", "cus_1", "changed@x.io", 200),
            customer("biz_snapshot", "cus_2", "b@x.io", 200),
        ],
    )
    .await
    .unwrap();
    other.commit().await.unwrap();
    assert_eq!(count(db.conn()).await, 2, "the write is committed");

    // Every later statement of the snapshot still sees the view of its first read.
    assert_eq!(count(&snapshot).await, 1);
    let first = mirror::find::<stripe_customers::Entity, _>(&snapshot, &b, "cus_1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.email.as_deref(), Some("a@x.io"));
    if t.backend == Backend::Postgres {
        // And it cannot write (SQLite has no read-only transactions).
        let write = mirror::upsert::<stripe_customers::Entity, _>(
            &snapshot,
            &b,
            vec![customer("biz_snapshot", "cus_3", "c@x.io", 300)],
        )
        .await;
        assert!(write.is_err(), "a read-only snapshot wrote");
    } else {
        snapshot.commit().await.unwrap();
    }
});

db_test!(refresh_statistics_analyses_the_tables_asked_for, |t| {
    let db = &t.db;
    let b = biz("biz_stats");
    let rows = (0..50)
        .map(|i| customer("biz_stats", &format!("cus_{i}"), &format!("c{i}@x.io"), 100))
        .collect();
    mirror::upsert::<stripe_customers::Entity, _>(db.conn(), &b, rows)
        .await
        .unwrap();
    let number = |sql: String| async move { scalar(db, &sql).await[0].parse::<i64>().unwrap() };
    // How often a table was analysed: PostgreSQL counts the analyses of each table (manual
    // ones apart from autovacuum's), SQLite keeps its statistics in a table of their own.
    let analyses = |table: &str| {
        number(match t.backend {
            Backend::Postgres => format!(
                "SELECT CAST(analyze_count AS TEXT) FROM pg_stat_user_tables \
                 WHERE relname = '{table}'"
            ),
            Backend::Sqlite => "SELECT CAST(COUNT(*) AS TEXT) FROM sqlite_schema \
                 WHERE name = 'sqlite_stat1'"
                .to_owned(),
        })
    };
    // The statistics collector reports an ANALYZE asynchronously.
    let settled = |table: &'static str, n: i64| async move {
        for _ in 0..50 {
            if analyses(table).await == n {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        analyses(table).await
    };
    assert_eq!(analyses("stripe_customers").await, 0, "analysed before");
    db.refresh_statistics(Statistics::Mirror).await.unwrap();
    assert_eq!(
        settled("stripe_customers", 1).await,
        1,
        "mirror not analysed"
    );
    if t.backend == Backend::Sqlite {
        let stat = "SELECT CAST(COUNT(*) AS TEXT) FROM sqlite_stat1 WHERE tbl = 'stripe_customers'";
        assert!(
            number(stat.to_owned()).await > 0,
            "no statistics of stripe_customers"
        );
        return;
    }
    // PostgreSQL analyses exactly the tables asked for: the mirror's refresh left the read
    // models alone, theirs leaves the mirror alone.
    assert_eq!(
        analyses("customer_spend").await,
        0,
        "spend analysed with the mirror"
    );
    assert_eq!(
        analyses("mrr_snapshots").await,
        0,
        "snapshots analysed with the mirror"
    );
    db.refresh_statistics(Statistics::ReadModels).await.unwrap();
    assert_eq!(settled("customer_spend", 1).await, 1, "spend not analysed");
    assert_eq!(
        settled("mrr_snapshots", 1).await,
        1,
        "snapshots not analysed"
    );
    assert_eq!(
        analyses("stripe_customers").await,
        1,
        "mirror analysed with the spend"
    );
});

// More writers that read beside their transaction than the pool has connections: each holds a
// transaction and reads on another pooled connection meanwhile. Without the permits of
// `reading_beside` every connection could be held by a transaction waiting for another one
// (until the pool's acquire timeout fails them all). SQLite's writers never read beside.
db_test!(transactions_reading_beside_never_starve_the_pool, |t| {
    use sea_orm::{EntityTrait, PaginatorTrait, TransactionTrait};
    let db = &t.db;
    if t.backend == Backend::Sqlite {
        assert!(db.reading_beside().await.is_none());
        return;
    }
    let writers = (0..40).map(|_| async move {
        let beside = db.reading_beside().await;
        assert!(beside.is_some());
        let txn = db.conn().begin().await?;
        txn.execute_unprepared("SELECT 1").await?;
        // The read beside, on another pooled connection, while the transaction is open.
        let seen = stripe_customers::Entity::find().count(db.conn()).await?;
        txn.commit().await?;
        Ok::<_, sea_orm::DbErr>(seen)
    });
    let done = futures::future::join_all(writers).await;
    let failed: Vec<_> = done.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 40 failed, the first with {:?}",
        failed.len(),
        failed[0]
    );
});

// The lookups' pool plans each statement once on PostgreSQL; the main pool, whose writes are
// planned better with their values seen, keeps the default; `plan_once` switches a
// transaction over for its own remainder only; no pool JIT-compiles. On SQLite the lookups
// share the one pool.
db_test!(lookups_plan_once_and_writes_keep_the_default, |t| {
    use sea_orm::TransactionTrait;
    let db = &t.db;
    async fn mode<C: ConnectionTrait>(conn: &C) -> String {
        scalar_on(conn, "SELECT current_setting('plan_cache_mode')").await[0].clone()
    }
    if t.backend == Backend::Sqlite {
        // The same database: what the pool writes, the lookups read; `plan_once` changes
        // nothing and does not fail.
        let b = biz("biz_lookups");
        let txn = db.begin_write().await.unwrap();
        tributary_persistence::plan_once(&txn).await.unwrap();
        mirror::upsert::<stripe_customers::Entity, _>(
            &txn,
            &b,
            vec![customer("biz_lookups", "cus_1", "l@x.io", 1)],
        )
        .await
        .unwrap();
        txn.commit().await.unwrap();
        let read = mirror::find::<stripe_customers::Entity, _>(db.lookups(), &b, "cus_1").await;
        assert_eq!(read.unwrap().unwrap().email.as_deref(), Some("l@x.io"));
        return;
    }
    assert_eq!(mode(db.lookups()).await, "force_generic_plan");
    assert_eq!(mode(db.conn()).await, "auto");
    // Neither pool compiles plans (a generic plan whose cost is guessed high would be
    // compiled at every execution); the writes use the main pool here.
    for conn in [db.lookups(), db.conn()] {
        let jit = scalar_on(conn, "SELECT current_setting('jit')").await[0].clone();
        assert_eq!(jit, "off");
    }
    let txn = db.conn().begin().await.unwrap();
    assert_eq!(mode(&txn).await, "auto");
    tributary_persistence::plan_once(&txn).await.unwrap();
    assert_eq!(mode(&txn).await, "force_generic_plan");
    txn.commit().await.unwrap();
    // Every connection of the pool, held at once (so the one that transaction used too), is
    // back to the default.
    let all = (0..tributary_persistence::POSTGRES_POOL).map(|_| db.conn().begin());
    let all = futures::future::try_join_all(all).await.unwrap();
    for txn in all {
        assert_eq!(mode(&txn).await, "auto");
        txn.commit().await.unwrap();
    }
});

// A busy pooled connection is handed out without a ping (sqlx's default pings at every
// acquire: a round trip before each statement), and a connection the server dropped while it
// sat idle is still found out and replaced before use: PostgreSQL ends every other backend
// of the database, and after a second of rest each pool answers on every connection it holds.
db_test!(idle_connections_are_pinged_and_busy_ones_are_not, |t| {
    use sea_orm::TransactionTrait;
    let db = &t.db;
    if t.backend == Backend::Sqlite {
        for conn in [db.conn(), db.writer()] {
            let options = conn.get_sqlite_connection_pool().options();
            assert!(!options.get_test_before_acquire());
        }
        return;
    }
    for conn in [db.conn(), db.lookups()] {
        let options = conn.get_postgres_connection_pool().options();
        assert!(!options.get_test_before_acquire());
    }
    // Every connection of both pools opened and idle.
    for conn in [db.conn(), db.lookups()] {
        let all = (0..tributary_persistence::POSTGRES_POOL).map(|_| conn.begin());
        for txn in futures::future::try_join_all(all).await.unwrap() {
            txn.commit().await.unwrap();
        }
    }
    let admin = TestDb::postgres().await.expect("PostgreSQL is configured");
    let ended = scalar_on(
        admin.db.conn(),
        &format!(
            "WITH mine AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE datname = '{}') \
             SELECT count(*)::text FROM mine WHERE pg_terminate_backend(pid)",
            scalar(db, "SELECT current_database()::text").await[0]
        ),
    )
    .await;
    assert_eq!(
        ended,
        [(2 * tributary_persistence::POSTGRES_POOL).to_string()]
    );
    tokio::time::sleep(tributary_persistence::PING_AFTER_IDLE + Duration::from_millis(200)).await;
    for conn in [db.conn(), db.lookups()] {
        let all = (0..tributary_persistence::POSTGRES_POOL).map(|_| conn.begin());
        for txn in futures::future::try_join_all(all).await.unwrap() {
            assert_eq!(scalar_on(&txn, "SELECT 'up'").await, ["up"]);
            txn.commit().await.unwrap();
        }
    }
    admin.cleanup().await;
});

/// SQLite answers the link-graph walk's lookups through the link indexes, not by reading a
/// business's rows: after a bulk load of payments most of which have no customer or email,
/// and none an invoice (as payment intents of the current API), analysed as a full sync analyses them, each list of a round (`business_id = ? AND
/// invoice IN (…)`, one statement per list on SQLite: `reads::graph_in_rounds`) takes its
/// own index, on a connection that read the schema before the analysis as on one after it.
/// A bounded analysis made a business look like a thousand rows
/// (`Database::refresh_statistics`), whole link indexes counted their `NULL`s as one key of
/// thousands of rows (migration `m20261208_000008_sqlite_partial_links`), and an `OR` of the
/// lists was planned as a read of the business's rows through `idx_stripe_orders_created`
/// (27,939 payments at `bench` scale: 100–300 ms a walk, 20–25 webhook events/s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_walks_the_links_through_their_indexes() {
    tributary_persistence::testing::run(Backend::Sqlite, |t| async move {
        let conn = t.db.conn();
        conn.execute_unprepared(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2999) \
             INSERT INTO stripe_orders (business_id, stripe_id, stripe_type, customer, email, \
               status, amount, amount_received, currency, invoice, payment_intent, raw, \
               created, last_event_at, synced_at) \
             SELECT 'biz_plan', 'pi_' || i, 'payment_intent', \
               CASE WHEN i % 20 = 0 THEN 'cus_' || i END, \
               CASE WHEN i % 50 = 0 THEN 'u' || i || '@x.io' END, 'succeeded', 100, 100, \
               'usd', NULL, NULL, '{}', \
               1700000000 + i, 0, 0 FROM n",
        )
        .await
        .unwrap();
        let plans = || async {
            let mut out = Vec::new();
            for col in ["customer", "email", "invoice"] {
                let sql = format!(
                    "EXPLAIN QUERY PLAN SELECT stripe_id FROM stripe_orders \
                     WHERE business_id = 'biz_plan' AND {col} IN ('a', 'b') AND deleted = 0"
                );
                let rows = conn
                    .query_all_raw(Statement::from_string(sea_orm::DbBackend::Sqlite, sql))
                    .await
                    .unwrap();
                let plan: Vec<String> = rows
                    .iter()
                    .map(|r| r.try_get::<String>("", "detail").unwrap())
                    .collect();
                out.push((col, plan.join("\n")));
            }
            out
        };
        let unanalysed = plans().await;
        t.db.refresh_statistics(Statistics::Mirror).await.unwrap();
        // Analysed: the statistics say what the data is.
        let stat = scalar_on(
            conn,
            "SELECT stat FROM sqlite_stat1 WHERE idx = 'idx_stripe_orders_created'",
        )
        .await;
        assert_eq!(stat, ["3000 3000 1"], "the business's rows miscounted");
        // The link indexes count only the payments that have the link: 150 have a customer,
        // 60 an email, none an invoice. Whole indexes counted 3,000
        // entries each, the `NULL`s as one key of thousands of rows.
        let links = scalar_on(
            conn,
            "SELECT idx || ' ' || stat FROM sqlite_stat1 \
             WHERE idx IN ('idx_stripe_orders_customer', 'idx_stripe_orders_email', \
                           'idx_stripe_orders_invoice') ORDER BY idx",
        )
        .await;
        assert_eq!(
            links,
            [
                "idx_stripe_orders_customer 150 150 1",
                "idx_stripe_orders_email 60 60 1",
                "idx_stripe_orders_invoice 0 0 0"
            ]
        );
        for (col, plan) in unanalysed.into_iter().chain(plans().await) {
            assert!(
                plan.contains(&format!("USING INDEX idx_stripe_orders_{col} ")),
                "payments by {col} not through their index:\n{plan}"
            );
        }
    })
    .await;
}
