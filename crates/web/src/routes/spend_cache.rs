//! The `customer_spend` rows of each business kept in memory for its current `data_version`
//! ([`SpendSnapshot`]), so the customers grid and the spend of up to 1,000 emails are answered
//! without a database query beyond the version's primary-key read. Beside the rows, each
//! email's entry of a summaries body is kept rendered ([`Kept::entry`]): an answer of 1,000
//! emails is then copies of ready JSON, not 1,000 summaries computed and serialised again.
//!
//! A request whose business has no snapshot at the current version is answered from the
//! database, exactly as before, and starts a load in the background (one per business at a
//! time). Loads are spaced so that a business whose data changes all day spends at most a
//! fifth of the time loading ([`SPACING`]): under a steady stream of changes its reads stay
//! on the database instead of reloading after every change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tributary_domain::BusinessId;
use tributary_persistence::reads::SpendSnapshot;
use tributary_persistence::{Database, access};

use super::contacts::summary_entry;

/// The most `customer_spend` rows kept, all businesses together (about 200 bytes each, and
/// about as much again for the rendered entries).
pub const MAX_ROWS: u64 = 500_000;
/// A business's next load starts no sooner than this many times its last load's duration
/// after that load ended.
pub const SPACING: u32 = 4;

/// Snapshots per business (see the module doc). Cheap to clone: clones share the cache. Besides
/// the bounded snapshots it keeps the time of each business's last load, one small entry per
/// business read since the process started (bounded by the number of tenants).
#[derive(Debug, Clone)]
pub struct SpendCache(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    snapshots: quick_cache::sync::Cache<String, (i64, Arc<Kept>), Weight>,
    loads: Mutex<HashMap<String, Load>>,
}

/// The last load of one business.
#[derive(Debug, Clone, Copy)]
struct Load {
    running: bool,
    ended: Instant,
    took: Duration,
}

#[derive(Debug, Clone)]
struct Weight;

impl quick_cache::Weighter<String, (i64, Arc<Kept>)> for Weight {
    fn weight(&self, _key: &String, (_, kept): &(i64, Arc<Kept>)) -> u64 {
        kept.spend.len().max(1) as u64
    }
}

/// One business's spend rows at one data version, with each email's summaries entry.
#[derive(Debug)]
pub struct Kept {
    /// The rows (the grid's pages and orders).
    pub spend: SpendSnapshot,
    /// `"<email>":{…}` of every email with spend, rendered by [`summary_entry`].
    entries: HashMap<Box<str>, Box<[u8]>, foldhash::fast::RandomState>,
}

impl Kept {
    /// Renders every email's entry once.
    pub fn new(spend: SpendSnapshot) -> Self {
        let entries = spend
            .emails()
            .map(|(email, rows)| (email.into(), summary_entry(email, rows).into()))
            .collect();
        Self { spend, entries }
    }

    /// The email's rendered entry; `None` when it has no spend.
    pub fn entry(&self, email: &str) -> Option<&[u8]> {
        self.entries.get(email).map(|e| &e[..])
    }
}

impl Default for SpendCache {
    fn default() -> Self {
        Self(Arc::new(Inner {
            snapshots: quick_cache::sync::Cache::with_weighter(256, MAX_ROWS, Weight),
            loads: Mutex::default(),
        }))
    }
}

impl SpendCache {
    /// The business's snapshot if it is at `version` or later; otherwise `None` (answer from
    /// the database) after starting a background load when none is running and the last one
    /// ended long enough ago. A business without a connection row (`version` `None`) is never
    /// cached.
    pub fn current(
        &self,
        db: &Database,
        business: &BusinessId,
        version: Option<i64>,
    ) -> Option<Arc<Kept>> {
        let Some(version) = version else {
            // Disconnected: its rows are gone, and so is what was kept of them.
            self.0.snapshots.remove(business.as_str());
            return None;
        };
        if let Some((at, snapshot)) = self.0.snapshots.get(business.as_str())
            && at >= version
        {
            return Some(snapshot);
        }
        if self.claim(business) {
            let cache = self.clone();
            let db = db.clone();
            let business = business.clone();
            actix_web::rt::spawn(async move { cache.load(&db, &business).await });
        }
        None
    }

    /// Marks a load of the business running, unless one is or the last ended too recently.
    fn claim(&self, business: &BusinessId) -> bool {
        let mut loads = self.0.loads.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match loads.get_mut(business.as_str()) {
            Some(l) if l.running || now < l.ended + l.took * SPACING => false,
            Some(l) => {
                l.running = true;
                true
            }
            None => {
                loads.insert(
                    business.as_str().to_owned(),
                    Load {
                        running: true,
                        ended: now,
                        took: Duration::ZERO,
                    },
                );
                true
            }
        }
    }

    /// Loads the business's rows, labelled with the version read before them (the rows are at
    /// least that new). A failed load is only logged: requests keep using the database.
    async fn load(&self, db: &Database, business: &BusinessId) {
        let started = Instant::now();
        let loaded = async {
            let version = access::data_version(db, business).await?;
            let snapshot = SpendSnapshot::load(db.conn(), business).await?;
            Ok::<_, tributary_persistence::PersistenceError>(
                version.map(|v| (v, Kept::new(snapshot))),
            )
        }
        .await;
        match loaded {
            Ok(Some((version, kept))) => {
                self.0
                    .snapshots
                    .insert(business.as_str().to_owned(), (version, Arc::new(kept)));
            }
            Ok(None) => {
                self.0.snapshots.remove(business.as_str());
            }
            Err(e) => {
                tracing::warn!(business = %business, error = %e, "spend snapshot load failed")
            }
        }
        let mut loads = self.0.loads.lock().unwrap_or_else(PoisonError::into_inner);
        loads.insert(
            business.as_str().to_owned(),
            Load {
                running: false,
                ended: Instant::now(),
                took: started.elapsed(),
            },
        );
    }
}
