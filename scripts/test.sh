#!/usr/bin/env bash
# The whole test suite: formatting, lints, Rust tests, Airbyte protocol
# validation with airbyte-cdk's models, a PyAirbyte sync, and the Docker image.
#
#   bash scripts/test.sh
#
# Environment:
#   SOURCE_LOOP_CACHE        cache root (Python venvs), default ~/.cache/source-loop
#   CARGO_TARGET_DIR         cargo's target dir (default ./target; .ci/run puts it in the cache)
#   SOURCE_LOOP_SKIP_DOCKER=1  skip building and running the container image
#   SOURCE_LOOP_SKIP_PYTHON=1  skip the protocol validation and PyAirbyte steps
#   SOURCE_LOOP_SKIP_RUST=1    skip fmt/clippy/test/build; use the binaries in $CARGO_TARGET_DIR/debug
#   SOURCE_LOOP_SKIP_MELTANO=1 skip the Meltano pipeline (tap-loop → target-jsonl) and singer-check-tap
#   SOURCE_LOOP_SKIP_PROMTOOL=1  skip checking and unit-testing monitoring/alerts.yml with promtool
#   (the Python checks drive the debug binaries cargo test built: no second, release, build;
#   the Docker image is the release build)
#   SOURCE_LOOP_SKIP_LOAD=1    skip the `sync --into sqlite` smoke run with the debug binaries
#   SOURCE_LOOP_SKIP_POSTGRES=1  let the loader's Postgres tests skip when no PostgreSQL binaries
#                            are installed (otherwise their absence fails the run)
#   PYTHON                   the Python 3.11+ to make the venv with (default: python3)
#   CONTAINER_SH             path to container.sh (default: ../shared/tools/container.sh, then
#                            /work/shared/tools/container.sh)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${SOURCE_LOOP_CACHE:-$HOME/.cache/source-loop}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET" in /*) ;; *) TARGET=$ROOT/$TARGET ;; esac
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
START=$(date +%s)

section() { printf '\n==== %s ==== (+%ss)\n' "$*" "$(( $(date +%s) - START ))"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

PIDS=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/source-loop-test.XXXXXX")
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# the loader's Postgres tests are mandatory here (they skip loudly elsewhere without binaries)
if [ "${SOURCE_LOOP_SKIP_POSTGRES:-0}" != 1 ]; then export SOURCE_LOOP_REQUIRE_POSTGRES=1; fi

if [ "${SOURCE_LOOP_SKIP_RUST:-0}" != 1 ]; then
  section "cargo fmt --check"
  cargo fmt --all -- --check $([ -t 1 ] || echo --color=never) || die "formatting: run 'cargo fmt --all'"

  section "cargo clippy (-D warnings)"
  cargo clippy --workspace --all-targets --locked -- -D warnings || die "clippy"

  section "cargo test"
  cargo test --workspace --locked || die "cargo test"

  section "cargo build (all binaries, for the Python checks)"
  cargo build --locked --workspace --bins || die "build"
else
  section "SOURCE_LOOP_SKIP_RUST=1: using the binaries already in $TARGET/debug"
fi
SOURCE_LOOP_BIN=$TARGET/debug/source-loop
FAKE_LOOP_BIN=$TARGET/debug/fake-loop
[ -x "$SOURCE_LOOP_BIN" ] || die "no $SOURCE_LOOP_BIN after the build"
[ -x "$FAKE_LOOP_BIN" ] || die "no $FAKE_LOOP_BIN after the build"
export SOURCE_LOOP_BIN FAKE_LOOP_BIN
ls -l "$SOURCE_LOOP_BIN" "$FAKE_LOOP_BIN"

# Start fake-loop on 127.0.0.1 in the background; sets FAKE_PID, FAKE_BASE_URL, FAKE_ROOT_URL.
# It exits when its stdin (a fifo this shell holds open) closes, and the EXIT trap kills it.
start_fake() {
  local out=$TMP/fake.$RANDOM fifo=$TMP/fake-stdin.$RANDOM
  mkfifo "$fifo"
  timeout 900 "$FAKE_LOOP_BIN" --port 0 --token fake-token --exit-on-stdin-eof "$@" <"$fifo" >"$out" 2>"$out.err" &
  FAKE_PID=$!
  PIDS+=("$FAKE_PID")
  exec {FAKE_FD}>"$fifo"   # hold the fifo's write end open for as long as this shell lives
  local i
  for i in $(seq 1 100); do
    if [ -s "$out" ] && head -n1 "$out" | grep -q '}'; then break; fi
    kill -0 "$FAKE_PID" 2>/dev/null || { cat "$out.err" >&2; die "fake-loop exited at startup"; }
    sleep 0.1
  done
  local line; line=$(head -n1 "$out")
  FAKE_BASE_URL=$(printf '%s' "$line" | sed -n 's/.*"base_url":"\([^"]*\)".*/\1/p')
  FAKE_ROOT_URL=$(printf '%s' "$line" | sed -n 's/.*"root_url":"\([^"]*\)".*/\1/p')
  [ -n "$FAKE_BASE_URL" ] || die "fake-loop printed no base_url: $line"
}

write_config() {  # write_config FILE TOKEN
  cat >"$1" <<EOF
{
  "api_token": "$2",
  "start_date": "2000-01-01T00:00:00Z",
  "base_url": "$FAKE_BASE_URL",
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
}

if [ "${SOURCE_LOOP_SKIP_PYTHON:-0}" != 1 ]; then
  section "Python venv (airbyte-cdk, PyAirbyte)"
  REQ=tests/python/requirements.txt
  PY=${PYTHON:-python3}
  command -v "$PY" >/dev/null || die "no $PY: install Python 3.11 (and python3-venv)"
  HASH=$( (cat "$REQ"; "$PY" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
  VENV=$CACHE/venv-$HASH
  if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.complete" ]; then
    echo "creating $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    "$PY" -m venv "$VENV" || die "python venv (on Debian: apt-get install python3-venv)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" || die "pip install -r $REQ"
    touch "$VENV/.complete"
  else
    echo "using $VENV"
  fi
  VPY=$VENV/bin/python
  # offline: no connector registry, no telemetry; and quiet about google-* deprecation notices
  export AIRBYTE_OFFLINE_MODE=1 DO_NOT_TRACK=1 PYTHONWARNINGS=ignore::FutureWarning
  "$VPY" -c 'import airbyte_cdk, airbyte; from importlib.metadata import version as v; print("airbyte-cdk", v("airbyte-cdk"), "| airbyte (PyAirbyte)", v("airbyte"))'

  section "Airbyte protocol validation (airbyte-cdk models)"
  "$VPY" tests/python/protocol_check.py || die "protocol validation"

  section "PyAirbyte sync into DuckDB (offline)"
  timeout 900 "$VPY" tests/python/pyairbyte_check.py || die "PyAirbyte check"
fi

if [ "${SOURCE_LOOP_SKIP_MELTANO:-0}" != 1 ]; then
  section "Meltano venvs (meltano; singer-tools)"
  # venv_for REQ NAME: a venv in $CACHE keyed by the requirements file and the Python; prints its path
  venv_for() {
    local req=$1 name=$2 py=${PYTHON:-python3} hash venv
    hash=$( (cat "$req"; "$py" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
    venv=$CACHE/$name-$hash
    if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
      echo "creating $venv" >&2
      rm -rf "$venv"; mkdir -p "$CACHE"
      "$py" -m venv "$venv" >&2 || die "python venv $name"
      "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2 || die "pip install -r $req"
      touch "$venv/.complete"
    else
      echo "using $venv" >&2
    fi
    printf '%s' "$venv"
  }
  MELTANO_VENV=$(venv_for tests/python/meltano-requirements.txt venv-meltano)
  SINGER_TOOLS_VENV=$(venv_for tests/python/singer-tools-requirements.txt venv-singer-tools)
  # where `meltano install` keeps target-jsonl's venv: keyed by meltano's pins and meltano.yml
  MELTANO_SYS_HASH=$(cat tests/python/meltano-requirements.txt examples/meltano/meltano.yml | sha256sum | cut -c1-16)
  export MELTANO="$MELTANO_VENV/bin/meltano" SINGER_CHECK_TAP="$SINGER_TOOLS_VENV/bin/singer-check-tap"
  export MELTANO_SYS_DIR_ROOT=$CACHE/meltano-sys-$MELTANO_SYS_HASH
  export TAP_LOOP_BIN=$TARGET/debug/tap-loop
  export MELTANO_SEND_ANONYMOUS_USAGE_STATS=false
  [ -x "$TAP_LOOP_BIN" ] || die "no $TAP_LOOP_BIN after the build"
  "$MELTANO" --version

  section "Meltano: meltano run tap-loop target-jsonl, twice (examples/meltano)"
  timeout 900 "$MELTANO_VENV/bin/python" tests/python/meltano_check.py || die "Meltano check"
fi

if [ "${SOURCE_LOOP_SKIP_PROMTOOL:-0}" != 1 ]; then
  # The Prometheus alert rules: valid, and each alert fires on the series it should
  # (Debian's `prometheus` package ships promtool; .ci/run installs it).
  section "Prometheus alert rules (promtool check rules, promtool test rules)"
  command -v promtool >/dev/null || die "no promtool: apt-get install prometheus (or SOURCE_LOOP_SKIP_PROMTOOL=1)"
  promtool check rules monitoring/alerts.yml || die "promtool check rules monitoring/alerts.yml"
  promtool test rules monitoring/alerts.test.yml || die "promtool test rules monitoring/alerts.test.yml"
fi

if [ "${SOURCE_LOOP_SKIP_LOAD:-0}" != 1 ]; then
  section "sync --into sqlite: load, reload incrementally, read the metric views"
  start_fake --subscriptions 120 --orders 150 --customers 40 --products 10 --activity-logs 60
  mkdir -p "$TMP/load"
  write_config "$TMP/load/config.json" fake-token
  "$SOURCE_LOOP_BIN" sync --config "$TMP/load/config.json" --into "sqlite:$TMP/load/loop.db" 2>"$TMP/load/sync1.err" \
    || { cat "$TMP/load/sync1.err" >&2; die "sync into SQLite"; }
  grep -q 'rows now: activity_logs 60, customers 40, orders 150, products 10, subscriptions 120' "$TMP/load/sync1.err" \
    || { cat "$TMP/load/sync1.err" >&2; die "sync into SQLite: wrong row counts"; }
  "$SOURCE_LOOP_BIN" sync --config "$TMP/load/config.json" --into "sqlite:$TMP/load/loop.db" 2>"$TMP/load/sync2.err" \
    || { cat "$TMP/load/sync2.err" >&2; die "second sync into SQLite"; }
  grep -q 'subscriptions: complete: 0 records' "$TMP/load/sync2.err" || { cat "$TMP/load/sync2.err" >&2; die "the second sync was not incremental"; }
  "${PYTHON:-python3}" - "$TMP/load/loop.db" <<'PY' || die "metric views"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
for view in ["mrr_by_month", "churn_by_month", "subscription_status_by_month", "orders_by_status",
             "failed_payments", "customer_ltv", "ltv_by_currency"]:
    n = db.execute(f"SELECT COUNT(*) FROM {view}").fetchone()[0]
    assert n > 0, f"{view} is empty"
    print(f"ok   {view}: {n} rows")
PY
fi

if [ "${SOURCE_LOOP_SKIP_DOCKER:-0}" != 1 ]; then
  section "Docker image (container.sh: podman/buildah)"
  CONTAINER_SH=${CONTAINER_SH:-}
  if [ -z "$CONTAINER_SH" ]; then
    for c in "$ROOT/../shared/tools/container.sh" /work/shared/tools/container.sh; do
      [ -f "$c" ] && { CONTAINER_SH=$c; break; }
    done
  fi
  [ -n "$CONTAINER_SH" ] && [ -f "$CONTAINER_SH" ] || die "container.sh not found (set CONTAINER_SH, or SOURCE_LOOP_SKIP_DOCKER=1)"
  TAG=localhost/source-loop:test
  bash "$CONTAINER_SH" setup
  bash "$CONTAINER_SH" build "$TAG" "$ROOT" || die "image build"
  podman image prune -f >/dev/null 2>&1 || true   # drop the previous build's dangling stages
  podman image inspect "$TAG" --format 'user={{.Config.User}} entrypoint={{.Config.Entrypoint}} labels={{.Config.Labels}}'
  [ "$(podman image inspect "$TAG" --format '{{.Config.User}}')" != "" ] || die "image runs as root"

  # run_image OUT [container.sh run args...]: run the image, stdout to OUT. Seen once here: a
  # run right after a build printed nothing; an empty answer is retried once, with a note.
  run_image() {
    local out=$1; shift
    bash "$CONTAINER_SH" run "$@" >"$out" || return 1
    if [ ! -s "$out" ]; then
      echo "note: the image printed nothing; running it again" >&2
      bash "$CONTAINER_SH" run "$@" >"$out" || return 1
    fi
  }

  # spec from the image equals the binary's
  run_image "$TMP/spec.image" "$TAG" spec || die "image: spec"
  "$SOURCE_LOOP_BIN" spec >"$TMP/spec.host"
  cmp -s "$TMP/spec.image" "$TMP/spec.host" || { diff "$TMP/spec.host" "$TMP/spec.image" | head -20; die "image spec differs from the binary's"; }
  echo "ok   image spec == binary spec"

  # check from the image, against fake-loop on the host (buildah run shares the host network)
  start_fake --subscriptions 10 --orders 10 --customers 5 --products 5 --activity-logs 10
  CFG=$TMP/image-config
  mkdir -p "$CFG"
  write_config "$CFG/config.json" fake-token
  write_config "$CFG/bad.json" wrong-token
  chmod 755 "$CFG"; chmod 644 "$CFG"/*.json   # the image's user (uid 1000) must read them
  run_image "$TMP/check.image" -v "$CFG:/secrets:ro" "$TAG" check --config /secrets/config.json \
    || die "image: check exited non-zero"
  cat "$TMP/check.image"
  grep -q '"status":"SUCCEEDED"' "$TMP/check.image" || die "image: check did not report SUCCEEDED"
  echo "ok   image check SUCCEEDED"
  run_image "$TMP/check-bad.image" -v "$CFG:/secrets:ro" "$TAG" check --config /secrets/bad.json \
    || die "image: check with a wrong token exited non-zero"
  grep -q '"status":"FAILED"' "$TMP/check-bad.image" || { cat "$TMP/check-bad.image"; die "image: check with a wrong token did not report FAILED"; }
  echo "ok   image check with a wrong token FAILED"
fi

section "all tests passed"
echo "total $(( $(date +%s) - START ))s"
