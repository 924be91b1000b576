#!/usr/bin/env bash
# Demo: a full sync and an incremental sync of source-loop against the fake Loop API.
#
#   bash scripts/demo.sh
#
# Builds the release binaries, starts fake-loop on 127.0.0.1 (stopped on exit), runs
#   source-loop read --config config.json --catalog catalog/configured_catalog.json
# summarises it (records per stream, final state), touches 5 subscriptions through the fake's
# control API, runs an incremental read from the last state, and shows that exactly the touched
# subscriptions (plus any boundary records at the saved cursor) came back. Then loads every
# stream into SQLite (source-loop sync --into sqlite:loop.db) and prints the MRR and churn views.
# Uses jq when installed, else python3. Files are left in $DEMO_DIR (default: a temp dir).
# SOURCE_LOOP_BIN and FAKE_LOOP_BIN (both) point at prebuilt binaries and skip the build.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
DIR=${DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/source-loop-demo.XXXXXX")}
mkdir -p "$DIR"
CATALOG=$ROOT/catalog/configured_catalog.json
TOUCH=${DEMO_TOUCH:-5}

if [ -t 1 ]; then say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else say() { printf '\n== %s\n' "$*"; }; fi
die() { echo "demo: $*" >&2; exit 1; }

FAKE_PID=
cleanup() {
  if [ -n "$FAKE_PID" ]; then kill "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${DEMO_JSON:-}" ]; then JSON=$DEMO_JSON   # jq or python, to force one
elif command -v jq >/dev/null; then JSON=jq
elif command -v python3 >/dev/null; then JSON=python
else die "needs jq or python3"; fi

http() {  # http METHOD URL [BODY]
  if command -v curl >/dev/null; then
    if [ $# -ge 3 ]; then curl -fsS -X "$1" -H 'content-type: application/json' --data "$3" "$2"
    else curl -fsS -X "$1" "$2"; fi
  else
    python3 - "$@" <<'PY'
import sys, urllib.request
m, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=m, headers={"content-type": "application/json"})
print(urllib.request.urlopen(req, timeout=30).read().decode())
PY
  fi
}

# records per stream and the last state per stream of a read's output
summarise() {
  if [ $JSON = jq ]; then
    echo "records per stream:"
    jq -r 'select(.type=="RECORD") | .record.stream' "$1" | sort | uniq -c | awk '{printf "  %-15s %s\n", $2, $1}'
    echo "message types:"
    jq -r '.type' "$1" | sort | uniq -c | awk '{printf "  %-15s %s\n", $2, $1}'
    echo "final state per stream:"
    jq -c 'select(.type=="STATE") | .state' "$1" \
      | jq -s -r 'map(select(.type=="STREAM")) | group_by(.stream.stream_descriptor.name) | map(last)[]
                  | "  \(.stream.stream_descriptor.name): \(.stream.stream_state | tojson)"'
    echo "the connector's own summary (requests ÷ minimum pages is the efficiency figure):"
    jq -r 'select(.type=="LOG") | .log.message | select(startswith("sync summary"))' "$1" | sed 's/^/  /'
  else
    python3 - "$1" <<'PY'
import json, sys, collections
msgs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
recs = collections.Counter(m["record"]["stream"] for m in msgs if m["type"] == "RECORD")
print("records per stream:"); [print(f"  {k:<15} {v}") for k, v in sorted(recs.items())]
types = collections.Counter(m["type"] for m in msgs)
print("message types:"); [print(f"  {k:<15} {v}") for k, v in sorted(types.items())]
last = {}
for m in msgs:
    s = m.get("state") if m["type"] == "STATE" else None
    if s and s.get("type") == "STREAM":
        last[s["stream"]["stream_descriptor"]["name"]] = s
print("final state per stream:")
for k, s in sorted(last.items()):
    print(f"  {k}: {json.dumps(s['stream'].get('stream_state'), separators=(',', ':'))}")
print("the connector's own summary (requests ÷ minimum pages is the efficiency figure):")
for m in msgs:
    if m["type"] == "LOG" and m["log"]["message"].startswith("sync summary"):
        print("  " + m["log"]["message"])
PY
  fi
}

# the next read's --state: the last STATE message's state per stream, as a JSON array
state_for_next_read() {
  if [ $JSON = jq ]; then
    jq -c 'select(.type=="STATE") | .state' "$1" \
      | jq -s 'if length == 0 then [] elif (map(select(.type=="STREAM")) | length) > 0
               then map(select(.type=="STREAM")) | group_by(.stream.stream_descriptor.name) | map(last)
               else [last] end'
  else
    python3 - "$1" <<'PY'
import json, sys
last = {}
for l in open(sys.argv[1]):
    if l.strip():
        m = json.loads(l)
        if m["type"] == "STATE":
            s = m["state"]
            key = s["stream"]["stream_descriptor"]["name"] if s.get("type") == "STREAM" else "_"
            last[key] = s
print(json.dumps(list(last.values()), indent=2))
PY
  fi
}

if [ -n "${SOURCE_LOOP_BIN:-}" ] && [ -n "${FAKE_LOOP_BIN:-}" ]; then
  SL=$SOURCE_LOOP_BIN FL=$FAKE_LOOP_BIN   # prebuilt binaries given: no build
else
  say "building release binaries (cargo build --release --workspace --bins)"
  cargo build --release --locked --workspace --bins
  SL=$TARGET/release/source-loop
  FL=$TARGET/release/fake-loop
fi
[ -x "$SL" ] && [ -x "$FL" ] || die "binaries not found in $TARGET/release"

say "starting fake-loop on 127.0.0.1"
# Time-bounded, and it also exits when its stdin (this script's fifo) closes.
mkfifo "$DIR/fake.stdin"
timeout 600 "$FL" --port 0 --token fake-token --exit-on-stdin-eof \
  --subscriptions 150 --orders 120 --customers 60 --products 20 --activity-logs 80 \
  <"$DIR/fake.stdin" >"$DIR/fake.out" 2>"$DIR/fake.err" &
FAKE_PID=$!
exec 9>"$DIR/fake.stdin"
for _ in $(seq 1 100); do
  grep -q '}' "$DIR/fake.out" 2>/dev/null && break
  kill -0 "$FAKE_PID" 2>/dev/null || { cat "$DIR/fake.err" >&2; die "fake-loop did not start"; }
  sleep 0.1
done
LINE=$(head -n1 "$DIR/fake.out")
BASE_URL=$(printf '%s' "$LINE" | sed -n 's/.*"base_url":"\([^"]*\)".*/\1/p')
ROOT_URL=$(printf '%s' "$LINE" | sed -n 's/.*"root_url":"\([^"]*\)".*/\1/p')
[ -n "$BASE_URL" ] || die "fake-loop printed no base_url: $LINE"
echo "$LINE"

cat >"$DIR/config.json" <<EOF
{
  "api_token": "fake-token",
  "start_date": "2000-01-01T00:00:00Z",
  "base_url": "$BASE_URL",
  "page_size": 50,
  "rate_limits": {
    "subscription": {"requests": 1000, "per_seconds": 1},
    "order": {"requests": 1000, "per_seconds": 1},
    "activityLog": {"requests": 1000, "per_seconds": 1},
    "customer": {"requests": 1000, "per_seconds": 1},
    "product": {"requests": 1000, "per_seconds": 1}
  }
}
EOF
echo "config: $DIR/config.json (the real API needs only api_token and start_date)"

say "source-loop check"
"$SL" check --config "$DIR/config.json"

say "full sync: source-loop read --config config.json --catalog catalog/configured_catalog.json"
time "$SL" read --config "$DIR/config.json" --catalog "$CATALOG" >"$DIR/read1.jsonl" 2>"$DIR/read1.stderr" \
  || { tail -20 "$DIR/read1.stderr" >&2; die "full read failed"; }
summarise "$DIR/read1.jsonl"
state_for_next_read "$DIR/read1.jsonl" >"$DIR/state1.json"
echo "state saved to $DIR/state1.json"

say "touching $TOUCH subscriptions through the fake's control API"
http GET "$ROOT_URL/_control/records/subscriptions" >"$DIR/subs.before.json"
http POST "$ROOT_URL/_control/mutate" "{\"touch\":{\"stream\":\"subscriptions\",\"count\":$TOUCH}}" >"$DIR/mutate.json"
http GET "$ROOT_URL/_control/records/subscriptions" >"$DIR/subs.after.json"
sleep 2.5  # Loop filters are whole epoch seconds; a sync reads up to about a second before it starts

say "incremental sync: source-loop read ... --state state1.json"
time "$SL" read --config "$DIR/config.json" --catalog "$CATALOG" --state "$DIR/state1.json" \
  >"$DIR/read2.jsonl" 2>"$DIR/read2.stderr" || { tail -20 "$DIR/read2.stderr" >&2; die "incremental read failed"; }
summarise "$DIR/read2.jsonl"

say "which subscriptions came back"
python_or_jq_compare() {
  if [ $JSON = jq ]; then
    jq -n --slurpfile b "$DIR/subs.before.json" --slurpfile a "$DIR/subs.after.json" \
      '($b[0] | map({key: (.id|tostring), value: .updatedAt}) | from_entries) as $before
       | $a[0] | map(select($before[.id|tostring] != .updatedAt) | .id|tostring) | sort' >"$DIR/touched.json"
    jq -r 'select(.type=="RECORD" and .record.stream=="subscriptions") | .record.data.id|tostring' "$DIR/read2.jsonl" \
      | sort -u | jq -R . | jq -s . >"$DIR/returned.json"
    jq -n -r --slurpfile t "$DIR/touched.json" --slurpfile r "$DIR/returned.json" '
      ($t[0]) as $t | ($r[0]) as $r
      | "touched:  \($t | length) \($t)",
        "returned: \($r | length) \($r)",
        "boundary (returned, not touched): \(($r - $t) | length) \($r - $t)",
        "missing (touched, not returned):  \(($t - $r) | length) \($t - $r)",
        (if (($t - $r) | length) == 0 then "OK: every touched subscription came back" else "MISSING RECORDS" end)'
    [ "$(jq -n --slurpfile t "$DIR/touched.json" --slurpfile r "$DIR/returned.json" '($t[0] - $r[0]) | length')" = 0 ]
  else
    python3 - "$DIR" <<'PY'
import json, sys
d = sys.argv[1]
before = {str(r["id"]): r.get("updatedAt") for r in json.load(open(f"{d}/subs.before.json"))}
touched = sorted(str(r["id"]) for r in json.load(open(f"{d}/subs.after.json")) if before.get(str(r["id"])) != r.get("updatedAt"))
ret = sorted({str(m["record"]["data"]["id"]) for m in map(json.loads, filter(str.strip, open(f"{d}/read2.jsonl")))
              if m["type"] == "RECORD" and m["record"]["stream"] == "subscriptions"})
print(f"touched:  {len(touched)} {touched}")
print(f"returned: {len(ret)} {ret}")
print(f"boundary (returned, not touched): {sorted(set(ret) - set(touched))}")
missing = sorted(set(touched) - set(ret))
print(f"missing (touched, not returned):  {missing}")
print("OK: every touched subscription came back" if not missing else "MISSING RECORDS")
sys.exit(1 if missing else 0)
PY
  fi
}
python_or_jq_compare || die "the incremental read missed touched subscriptions"

say "load into SQLite: source-loop sync --config config.json --into sqlite:loop.db"
# the tables and the state live in one file; running it again syncs incrementally
time "$SL" sync --config "$DIR/config.json" --into "sqlite:$DIR/loop.db" 2>"$DIR/sync.stderr" \
  || { tail -20 "$DIR/sync.stderr" >&2; die "sync into SQLite failed"; }
grep 'rows now' "$DIR/sync.stderr" | sed 's/^source-loop sync: /  /'

# show a dashboard's numbers: sqlite3 when installed, else python3's sqlite3 module
show() {  # show TITLE SQL
  echo "$1"
  if command -v sqlite3 >/dev/null; then
    sqlite3 -header -column "$DIR/loop.db" "$2" | sed 's/^/  /'
  else
    python3 - "$DIR/loop.db" "$2" <<'PY'
import sqlite3, sys
cur = sqlite3.connect(sys.argv[1]).execute(sys.argv[2])
rows = [[d[0] for d in cur.description]] + [["" if v is None else str(v) for v in r] for r in cur]
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)))
PY
  fi
}
say "metric views (docs/metrics.md): the last three months"
show "MRR by month and currency (mrr_by_month):" \
  "SELECT month, currency, mrr, active_subscriptions FROM mrr_by_month
   WHERE month >= (SELECT date(MAX(month), '-2 months') FROM metric_months) ORDER BY month, currency"
show "monthly churn (churn_by_month):" \
  "SELECT month, active_at_start, churned, churn_rate FROM churn_by_month
   WHERE month >= (SELECT date(MAX(month), '-2 months') FROM metric_months) ORDER BY month"
echo "open $DIR/loop.db with any SQLite client; the views: mrr_by_month, subscription_status_by_month,"
echo "churn_by_month, orders_by_status, failed_payments, customer_ltv, ltv_by_currency"

say "done; files in $DIR"
