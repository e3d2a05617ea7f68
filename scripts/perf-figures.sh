#!/usr/bin/env bash
# Measures the figures quoted in docs/PERFORMANCE.md, each with the date, the machine's load
# average just before it ran and the exact command, so that every figure there names all three.
#
#   scripts/perf-figures.sh [GROUP...]     groups: slo criterion surfaces simulation (default: all)
#
# Writes a log to stdout; each figure starts with a line
#   ### <figure> | <UTC date and time> | loadavg <1 5 15 min> | <command>
# followed by the command's own output. Run it on an otherwise idle machine; it takes about
# 15 minutes on 2 cores (after the release build). Needs a real Redis for the SLO gate's Redis
# figures (as the tests get one: `source scripts/redis-env.sh`), and wrk for /health.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(slo criterion surfaces simulation)
bin=$CARGO_TARGET_DIR/release

# figure NAME -- COMMAND...: prints the header line, then runs the command (its status is kept).
figure() {
  local name=$1
  shift 2
  printf '\n### %s | %s | loadavg %s | %s\n' "$name" "$(date -u +%Y-%m-%dT%H:%MZ)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$*"
  "$@"
}

want() { printf '%s\n' "${groups[@]}" | grep -qx "$1"; }

if want surfaces && ! command -v wrk >/dev/null 2>&1; then
  echo "perf-figures: wrk is missing (apt-get install wrk); the surfaces group needs it" >&2
  exit 1
fi

cargo build -q --release --locked -p spiral-server -p spiral-harness

if want slo; then
  for i in 1 2 3; do
    figure "spiral-slo run $i" -- cargo run -q -p spiral-benches --release --locked --bin spiral-slo
  done
fi

if want criterion; then
  figure "criterion engine" -- cargo bench -q -p spiral-benches --locked --bench engine -- --warm-up-time 1 --measurement-time 4
  figure "criterion surfaces" -- cargo bench -q -p spiral-benches --locked --bench surfaces -- --warm-up-time 1 --measurement-time 3
fi

if want surfaces; then
  secret=perf-figures-secret-perf-figures-secret
  JWT_SECRET=$secret WS_RATE_LIMIT=1000000 SPIRAL_RATE_LIMIT=1000000,1 HTTP_RATE_LIMIT=1000000,1 \
    SPIRAL_WORKER_THREADS=1 SPIRAL_LOG=warn "$bin/spiral" serve &
  server=$!
  trap 'kill $server 2>/dev/null || true' EXIT
  for _ in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:3000/health 2>/dev/null && break; sleep 0.2; done
  for i in 1 2 3; do
    figure "load 1000,5000 run $i" -- "$bin/spiral-harness" load --rates 1000,5000 --duration-s 10 --warmup-s 2 --jwt-secret "$secret"
  done
  figure "load up the rates" -- "$bin/spiral-harness" load --rates 10000,15000,20000 --duration-s 10 --warmup-s 2 --jwt-secret "$secret"
  for i in 1 2 3; do
    figure "wrk /health run $i" -- wrk -t2 -c64 -d10s http://127.0.0.1:3000/health
  done
  kill $server
  wait $server || true
  trap - EXIT
fi

if want simulation; then
  for i in 1 2 3; do
    figure "smoke speed run $i" -- "$bin/spiral-harness" sweep scenarios/smoke.toml --seeds 0..100
  done
  figure "1,000 seeds over every scenario" -- "$bin/spiral-harness" sweep scenarios/*.toml --seeds 0..125
  for f in scenarios/*.toml; do
    figure "peak memory $(basename "$f" .toml)" -- /usr/bin/time -f 'peak RSS %M KiB' "$bin/spiral-harness" sim "$f" --seed 3
  done
fi
