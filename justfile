# Everyday recipes. `just --list` shows them.

pg_url := env_var_or_default("TRIBUTARY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")

# Format every crate.
fmt:
    cargo fmt --all

# Lints as CI runs them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# The test suite (PostgreSQL tests are skipped with a notice unless TRIBUTARY_TEST_POSTGRES_URL is set).
test:
    cargo test --workspace

# The test suite on SQLite and PostgreSQL.
test-pg:
    TRIBUTARY_TEST_POSTGRES_URL={{pg_url}} cargo test --workspace

# Apply migrations to the configured database (DATABASE_URL or TRIBUTARY__DATABASE__URL).
migrate:
    cargo run --bin tributary-api -- migrate

# Run the demo.
demo:
    cargo run --bin tributary-api -- --demo

# Run the Stripe simulator at a scale (empty|small|medium|bench).
sim scale="small":
    cargo run --bin tributary-stripe-sim -- --addr 127.0.0.1:12111 --seed 1 --accounts 2 --scale {{scale}}

# Everything CI runs.
ci:
    bash .ci/run

# Benchmarks (release build; bench/run.sh): first sync of a medium and a bench account, behind
# 50 ms and 25 req/s (wall ÷ rate-limit floor) and unthrottled (objects/s into SQLite and
# PostgreSQL, peak RSS); on a bench account synced into PostgreSQL, the read paths under wrk
# load and signed webhook ingest (see bench-reads, bench-webhooks), the ingest again with its
# Stripe reads behind 50 ms of latency (5,000 events) and at 128 concurrent deliveries (20,000
# events); then the peer
# (@supabase/stripe-sync-engine) side by side at medium scale (see bench-peer). Prints the wall
# time of the whole run; output in target/bench.md, results in target/bench.jsonl.
bench:
    bash bench/run.sh

# Read paths under wrk load on a synced account in PostgreSQL (release build): summary-by-emails
# (1,000 emails), customer-grid pages, stripe-info and the three dashboards; p50/p95/p99, req/s.
bench-reads scale="bench":
    command -v wrk >/dev/null || apt-get install -y wrk
    cargo build --release -p tributary-bench -p tributary-stripe-sim
    target/release/tributary-bench reads --scale {{scale}} --db postgres --json target/bench.jsonl

# Webhook ingest (release build): the simulator's events of a synced account, signed, with 10 %
# re-deliveries, into the Connect endpoint on PostgreSQL; events/s, latency, recorded-once check.
# latency: milliseconds in front of the simulator's Stripe reads during the ingest (0: none);
# concurrency: deliveries in flight at once; accounts: connected accounts (businesses) the
# events come from, each synced at `scale`.
bench-webhooks scale="bench" latency="0" concurrency="16" accounts="1":
    cargo build --release -p tributary-bench -p tributary-stripe-sim
    target/release/tributary-bench webhooks --scale {{scale}} --db postgres --stripe-latency-ms {{latency}} --webhook-concurrency {{concurrency}} --webhook-accounts {{accounts}} --json target/bench.jsonl

# A short benchmark (small account, debug build) that CI can afford.
bench-smoke:
    cargo run -p tributary-bench -- --scale small --db sqlite

# Peer benchmark: @supabase/stripe-sync-engine vs our sync on the same simulated account and
# PostgreSQL (unthrottled, 50 ms + 100 req/s, 50 ms + 25 req/s). Needs the release simulator
# (and target/release/tributary-bench for our side): see docs/performance.md.
bench-peer scale="medium":
    npm ci --prefix bench/peer
    bash bench/peer/compare.sh {{scale}}

# Fault tests alone, on SQLite and PostgreSQL: a private PostgreSQL cluster (initdb; needs the
# server binaries) killed mid-sync and stopped mid-webhook-burst, SQLite's write lock held by
# another connection, SIGTERM of the scheduler (sync, run-once, daemon) and of the API mid-sync.
faults:
    cargo build -p tributary-scheduler
    TRIBUTARY_TEST_POSTGRES_URL={{pg_url}} cargo test -p tributary-web --test api faults::
    TRIBUTARY_TEST_POSTGRES_URL={{pg_url}} cargo test -p tributary-scheduler --test cli faults::
    TRIBUTARY_TEST_POSTGRES_URL={{pg_url}} cargo test -p tributary-api --test cli load::sigterm

# Webhook storm: about 10,000 deliveries (30 % duplicates, shuffled, same-second ties) from 32
# concurrent clients into the API on PostgreSQL (2,000 on SQLite, which serialises writes); then
# every mirror must equal its account and every event be recorded exactly once. CI runs 2,000.
storm events="10000":
    TRIBUTARY_STORM_EVENTS={{events}} TRIBUTARY_TEST_POSTGRES_URL={{pg_url}} cargo test -p tributary-web --test api storm:: -- --nocapture --test-threads 1

# Soak: the tributary-api binary under mixed load (reads, signed webhooks, manual syncs) beside
# `tributary-scheduler daemon`, on SQLite and PostgreSQL, for 10 minutes; fails on any unexpected
# answer, a failed job, an inexact mirror, or resident memory that grows (last third of the run
# against the first). CI runs 20 s.
soak secs="600":
    cargo build -p tributary-scheduler
    TRIBUTARY_SOAK_SECS={{secs}} TRIBUTARY_TEST_POSTGRES_URL={{pg_url}} cargo test -p tributary-api --test cli load::soak -- --nocapture --test-threads 1
