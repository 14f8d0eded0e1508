#!/usr/bin/env bash
# Everything `just bench` runs, in order, on this machine: the release build, the first syncs
# (items 1 and 2 of issue #10), the read paths under wrk and the webhook ingest (items 4 and 5;
# the ingest again with its Stripe reads behind 50 ms, at 128 concurrent deliveries, and from
# four accounts at once), and
# the peer side by side (item 3). Prints markdown tables and the wall time of the whole run
# (release build included); the output is also kept in target/bench.md, the JSON lines in
# target/bench.jsonl and target/bench-peer.jsonl.
#
# Needs PostgreSQL at $TRIBUTARY_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
# wrk (installed with apt-get when missing), node and npm (for the peer).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p target
exec > >(tee target/bench.md) 2>&1
started=$(date +%s)
echo "# tributary-bench — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
cargo build --release -p tributary-bench -p tributary-stripe-sim
rm -f target/bench.jsonl target/bench-peer.jsonl
bench=target/release/tributary-bench
"$bench" --scale medium --db postgres --throttled --json target/bench.jsonl
# Each database's unthrottled sync in a process of its own: its peak RSS is then that sync's
# alone, not raised by what the allocator kept from the other database's sync.
"$bench" --scale medium --db sqlite --json target/bench.jsonl
"$bench" --scale medium --db postgres --json target/bench.jsonl
"$bench" --scale bench --db postgres --throttled --json target/bench.jsonl
"$bench" --scale bench --db sqlite --json target/bench.jsonl
"$bench" --scale bench --db postgres --json target/bench.jsonl
command -v wrk >/dev/null || apt-get install -y wrk
"$bench" load --scale bench --db postgres --json target/bench.jsonl
"$bench" webhooks --scale bench --db postgres --events 5000 --stripe-latency-ms 50 --json target/bench.jsonl
"$bench" webhooks --scale bench --db postgres --events 20000 --webhook-concurrency 128 --json target/bench.jsonl
"$bench" webhooks --scale bench --db postgres --events 20000 --webhook-accounts 4 --json target/bench.jsonl
npm ci --prefix bench/peer --no-audit --no-fund
bash bench/peer/compare.sh medium
echo
echo "just bench: $(($(date +%s) - started)) s wall time, release build included"
