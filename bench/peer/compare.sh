#!/usr/bin/env bash
# Peer benchmark driver: @supabase/stripe-sync-engine vs Tributary, first sync of the same
# simulated account (seed 42, one account) into the same PostgreSQL, under three conditions:
#   unthrottled | 50 ms latency + 100 req/s (live-mode limit) | 50 ms latency + 25 req/s (test mode)
#
#   bash bench/peer/compare.sh [small|medium|bench]        (default: medium)
#
# Needs: target/release/tributary-stripe-sim (cargo build --release -p tributary-stripe-sim),
# `npm ci --prefix bench/peer`, node, psql, a PostgreSQL server. Runs our side too when
# target/release/tributary-bench exists. Prints markdown tables on stdout (progress on stderr)
# and appends JSON lines to $BENCH_PEER_JSON (default target/bench-peer.jsonl).
#
# Environment:
#   PEER_PG_ADMIN   admin connection URL (default postgres://postgres@127.0.0.1:5432/postgres);
#                   each run gets a fresh database next to it, dropped afterwards
#   PEER_TIMEOUT    seconds per run (default: small 300, medium 1200, bench 5400)
#   SIM_BIN, OURS_BIN   override the binaries
#   PEER_RETRIES    stripe-node maxNetworkRetries for the peer (default 5)
set -euo pipefail

SCALE="${1:-medium}"
case "$SCALE" in small | medium | bench) ;; *)
    echo "compare.sh: scale must be small, medium or bench, not $SCALE" >&2
    exit 2
    ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
SIM_BIN="${SIM_BIN:-target/release/tributary-stripe-sim}"
OURS_BIN="${OURS_BIN:-target/release/tributary-bench}"
PG_ADMIN="${PEER_PG_ADMIN:-postgres://postgres@127.0.0.1:5432/postgres}"
PG_BASE="${PG_ADMIN%/*}"
RETRIES="${PEER_RETRIES:-5}"
JSON_OUT="${BENCH_PEER_JSON:-target/bench-peer.jsonl}"
case "$SCALE" in
small) DEFAULT_TIMEOUT=300 ;;
medium) DEFAULT_TIMEOUT=1200 ;;
bench) DEFAULT_TIMEOUT=5400 ;;
esac
TIMEOUT="${PEER_TIMEOUT:-$DEFAULT_TIMEOUT}"

die() {
    echo "compare.sh: $*" >&2
    exit 1
}
log() { echo "[compare] $*" >&2; }

[ -x "$SIM_BIN" ] || die "$SIM_BIN not found: cargo build --release -p tributary-stripe-sim"
[ -d bench/peer/node_modules/@supabase/stripe-sync-engine ] || die "peer not installed: npm ci --prefix bench/peer"
command -v node >/dev/null || die "node not found"
command -v psql >/dev/null || die "psql not found"
command -v curl >/dev/null || die "curl not found"
psql "$PG_ADMIN" -qAtc 'select 1' >/dev/null || die "cannot connect to PostgreSQL at $PG_ADMIN"
mkdir -p "$(dirname "$JSON_OUT")"

WORK="$(mktemp -d)"
SIM_PID=""
DBS=()
cleanup() {
    local db
    for db in "${DBS[@]+"${DBS[@]}"}"; do
        psql "$PG_ADMIN" -qc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 || true
    done
    if [ -n "$SIM_PID" ] && kill -0 "$SIM_PID" 2>/dev/null; then
        kill "$SIM_PID" 2>/dev/null || true
        wait "$SIM_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# JSON field extraction with node (no jq dependency): json_get FILE_OR_- EXPR
json_get() {
    node -e '
      const fs = require("fs");
      const src = process.argv[1] === "-" ? fs.readFileSync(0, "utf8") : fs.readFileSync(process.argv[1], "utf8");
      const j = JSON.parse(src.trim().split("\n").pop());
      const v = (new Function("j", "return (" + process.argv[2] + ")"))(j);
      process.stdout.write(typeof v === "object" ? JSON.stringify(v) : String(v));
    ' "$1" "$2"
}

# --- the simulator -----------------------------------------------------------------------------
log "starting $SIM_BIN --scale $SCALE (seed 42, one account)"
"$SIM_BIN" --addr 127.0.0.1:0 --seed 42 --accounts 1 --scale "$SCALE" >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
for _ in $(seq 1 600); do
    [ -s "$WORK/sim.out" ] && break
    kill -0 "$SIM_PID" 2>/dev/null || die "simulator exited: $(tail -5 "$WORK/sim.err")"
    sleep 0.2
done
[ -s "$WORK/sim.out" ] || die "simulator not ready after 120 s"
ADDR="$(json_get "$WORK/sim.out" 'j.addr')"
ACCT="$(json_get "$WORK/sim.out" 'j.accounts[0]')"
BASE="http://$ADDR"
curl -sf "$BASE/_sim/accounts" >"$WORK/accounts.json"
EXPECTED="$(json_get "$WORK/accounts.json" 'Object.values(j[0].counts).reduce((a,b)=>a+b,0)')"
log "simulator at $BASE, account $ACCT, counts $(json_get "$WORK/accounts.json" 'j[0].counts')"

set_faults() {
    curl -sf -X POST -H 'content-type: application/json' -d "$1" "$BASE/_sim/faults" >/dev/null
}

CONDS=("unthrottled" "50 ms, 100 req/s" "50 ms, 25 req/s")
FAULTS=('{}' '{"latency_ms":50,"rate_limit_per_second":100}' '{"latency_ms":50,"rate_limit_per_second":25}')
OURS_ARGS=("" "--throttled --rate 100" "--throttled --rate 25")
declare -A PEER_WALL OURS_WALL

echo
echo "Peer: @supabase/stripe-sync-engine, $SCALE account ($EXPECTED objects in the simulator, all kinds), $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| scale | condition | side | wall s | objects | rows | requests | 429s | req/s | objects/s |"
echo "|---|---|---|---|---|---|---|---|---|---|"

# --- the peer ----------------------------------------------------------------------------------
for i in "${!CONDS[@]}"; do
    cond="${CONDS[$i]}"
    db="peer_bench_$$_$i"
    psql "$PG_ADMIN" -v ON_ERROR_STOP=1 -qc "create database \"$db\"" >/dev/null
    DBS+=("$db")
    set_faults "${FAULTS[$i]}"
    curl -sf -X DELETE "$BASE/_sim/requests" >/dev/null
    log "peer, $cond (timeout ${TIMEOUT}s)"
    rc=0
    timeout --kill-after=10 "$TIMEOUT" node bench/peer/run.cjs --base "$BASE" --account "$ACCT" \
        --pg "$PG_BASE/$db" --retries "$RETRIES" >"$WORK/peer.$i.json" 2>"$WORK/peer.$i.err" || rc=$?
    curl -sf "$BASE/_sim/requests" >"$WORK/req.$i.json"
    set_faults '{}'
    psql "$PG_ADMIN" -qc "drop database if exists \"$db\" with (force)" >/dev/null || true
    reqs="$(json_get "$WORK/req.$i.json" 'j.total')"
    r429="$(json_get "$WORK/req.$i.json" 'Object.values(j.by_route||{}).reduce((a,r)=>a+(r["429"]||0),0)')"
    if [ "$rc" -ne 0 ] || [ ! -s "$WORK/peer.$i.json" ]; then
        why="exit $rc"
        [ "$rc" -eq 124 ] && why="timed out after ${TIMEOUT}s"
        log "peer FAILED ($why): $(tail -3 "$WORK/peer.$i.err")"
        echo "| $SCALE | $cond | peer | FAILED ($why) | — | — | $reqs | $r429 | — | — |"
        continue
    fi
    wall="$(json_get "$WORK/peer.$i.json" 'j.wall_s')"
    objects="$(json_get "$WORK/peer.$i.json" 'j.objects')"
    rows="$(json_get "$WORK/peer.$i.json" 'j.rows')"
    PEER_WALL[$i]="$wall"
    rps="$(node -e 'console.log((+process.argv[1]/+process.argv[2]).toFixed(1))' "$reqs" "$wall")"
    ops="$(node -e 'console.log((+process.argv[1]/+process.argv[2]).toFixed(0))' "$objects" "$wall")"
    echo "| $SCALE | $cond | peer | $(printf '%.1f' "$wall") | $objects | $rows | $reqs | $r429 | $rps | $ops |"
    node -e '
      const [peer, req, scale, cond] = process.argv.slice(1);
      const p = JSON.parse(require("fs").readFileSync(peer, "utf8").trim());
      const r = JSON.parse(require("fs").readFileSync(req, "utf8"));
      console.log(JSON.stringify({ side: "peer", scale, condition: cond, ...p, requests: r.total, by_route: r.by_route }));
    ' "$WORK/peer.$i.json" "$WORK/req.$i.json" "$SCALE" "$cond" >>"$JSON_OUT"
done

# The simulator is not needed by our side (tributary-bench starts its own, same seed and scale).
kill "$SIM_PID" 2>/dev/null || true
wait "$SIM_PID" 2>/dev/null || true
SIM_PID=""

# --- our side ----------------------------------------------------------------------------------
if [ -x "$OURS_BIN" ]; then
    for i in "${!CONDS[@]}"; do
        cond="${CONDS[$i]}"
        log "tributary, $cond (timeout ${TIMEOUT}s)"
        rm -f "$WORK/ours.$i.jsonl"
        rc=0
        # shellcheck disable=SC2086  # OURS_ARGS are separate flags
        timeout --kill-after=10 "$TIMEOUT" "$OURS_BIN" --scale "$SCALE" --db postgres --pg-url "$PG_ADMIN" \
            --sim-bin "$SIM_BIN" ${OURS_ARGS[$i]} --json "$WORK/ours.$i.jsonl" \
            >"$WORK/ours.$i.md" 2>"$WORK/ours.$i.err" || rc=$?
        if [ "$rc" -ne 0 ] || [ ! -s "$WORK/ours.$i.jsonl" ]; then
            why="exit $rc"
            [ "$rc" -eq 124 ] && why="timed out after ${TIMEOUT}s"
            log "tributary FAILED ($why): $(tail -3 "$WORK/ours.$i.err")"
            echo "| $SCALE | $cond | tributary | FAILED ($why) | — | — | — | — | — | — |"
            continue
        fi
        wall="$(json_get "$WORK/ours.$i.jsonl" 'j.wall_s')"
        objects="$(json_get "$WORK/ours.$i.jsonl" 'j.objects')"
        reqs="$(json_get "$WORK/ours.$i.jsonl" 'j.requests')"
        OURS_WALL[$i]="$wall"
        rps="$(node -e 'console.log((+process.argv[1]/+process.argv[2]).toFixed(1))' "$reqs" "$wall")"
        ops="$(node -e 'console.log((+process.argv[1]/+process.argv[2]).toFixed(0))' "$objects" "$wall")"
        echo "| $SCALE | $cond | tributary | $(printf '%.1f' "$wall") | $objects | — | $reqs | — | $rps | $ops |"
        node -e '
          const [f, cond] = process.argv.slice(1);
          const o = JSON.parse(require("fs").readFileSync(f, "utf8").trim().split("\n").pop());
          console.log(JSON.stringify({ side: "tributary", condition: cond, ...o }));
        ' "$WORK/ours.$i.jsonl" "$cond" >>"$JSON_OUT"
    done

    echo
    echo "| scale | condition | peer wall s | tributary wall s | peer ÷ tributary |"
    echo "|---|---|---|---|---|"
    for i in "${!CONDS[@]}"; do
        p="${PEER_WALL[$i]:-}"
        o="${OURS_WALL[$i]:-}"
        if [ -n "$p" ] && [ -n "$o" ]; then
            ratio="$(node -e 'console.log((+process.argv[1]/+process.argv[2]).toFixed(1)+"×")' "$p" "$o")"
            echo "| $SCALE | ${CONDS[$i]} | $(printf '%.1f' "$p") | $(printf '%.1f' "$o") | $ratio |"
        else
            echo "| $SCALE | ${CONDS[$i]} | ${p:-—} | ${o:-—} | — |"
        fi
    done
else
    log "$OURS_BIN not found: our side skipped (cargo build --release -p tributary-bench)"
fi
