#!/usr/bin/env bash
# The real-process world (docs/real-world.md): shipped scenarios against the release `spiral`
# binary, a real redis-server and a fault proxy on every link, judged by the simulator's
# checkers — and compared with the simulator's verdicts for the same seed. (The README's row
# "a scenario in the simulator and for real" diffs partition-heal seed 1: a client host
# partitioned through its proxies, another held by timeout toxics.)
#
#   scripts/real-world.sh        the CI set (about 4 minutes of runs):
#     1. diff redis-outage seed 1: Redis paused (SIGSTOP), the journal's disk filled, the server
#        killed (SIGKILL) in degraded mode and restarted, Redis errors (reset_peer) — real and
#        simulated verdicts must agree (and pass);
#     2. redis-outage seed 3 on the planted `journal-volatile` server: must FAIL, with
#        `acked_writes` (acknowledged writes lost in the crash) — in one of three tries: a
#        real run is not replayable, and a crash that finds the journal empty loses nothing;
#     3. slow clients: bad-clients seed 4 with each server's open-file limit lowered to 64 — an
#        oversized frame past 256 KiB, a peer that never reads, slowloris sockets on every port —
#        must pass.
#   scripts/real-world.sh all    the CI set, then the same slow-clients run on three planted
#                                servers, each of which must FAIL with its checker (in one of
#                                three tries, as step 2):
#                                `ws-no-linger` (close_codes, the oversized frame's 1009),
#                                `queue-unbounded-bytes` (close_codes, the non-reader's 1008),
#                                `no-header-timeout` (slow_clients).
#
# Each run prints the Redis it used and every real fault it applied; its run directory
# (history.jsonl, faults.jsonl, proxies.jsonl, each process's log, verdict.json, rerun.sh) is
# under $REAL_WORLD_OUT (default $CARGO_TARGET_DIR/real-world). Exits 1 if any step did not end
# as it must.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-ci}
case $mode in ci | all) ;; *) echo "usage: scripts/real-world.sh [ci|all]" >&2; exit 64 ;; esac
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
out=${REAL_WORLD_OUT:-$CARGO_TARGET_DIR/real-world}
rel=$CARGO_TARGET_DIR/release
mkdir -p "$out"

for tool in redis-server faketime; do
  command -v "$tool" >/dev/null || { echo "real-world: $tool is missing (Debian: apt-get install redis-server faketime)" >&2; exit 1; }
done

set -e
# The planted server shares its library build with the planted-bug demonstrations' harness
# (same features), then the plain one; `spiral-chaos` itself.
cargo build -q --release --locked -p spiral-server --bin spiral --features planted-bugs,coverage
cp "$rel/spiral" "$rel/spiral-planted"
cargo build -q --release --locked -p spiral-server --bin spiral
cargo build -q --release --locked -p spiral-chaos --bin spiral-chaos
set +e
chaos=$rel/spiral-chaos

failed=0
# step NAME WANTED_EXIT LOG -- COMMAND...: run it, show its output, check its exit status.
step() {
  local name=$1 want=$2 log=$3
  shift 4
  echo "--- $name"
  "$@" >"$log" 2>&1
  local rc=$?
  cat "$log"
  if [ "$rc" -ne "$want" ]; then
    echo "FAILED  $name: exit $rc, wanted $want"
    failed=1
    return 1
  fi
  echo "ok      $name (exit $rc)"
}

# caught NAME CHECK DIR -- COMMAND...: a run on a planted server must fail (exit 129) with
# CHECK, judged from DIR/verdict.json. A real run is not byte-replayable — the OS schedules it, and
# a crash may find the journal empty — so the run is tried up to three times: a planted bug
# the world catches only by luck shows as the attempts it took.
caught() {
  local name=$1 check=$2 dir=$3 attempt rc
  shift 4
  echo "--- $name"
  for attempt in 1 2 3; do
    "$@" >"$dir.log" 2>&1
    rc=$?
    cat "$dir.log"
    if [ "$rc" -eq 129 ] && grep -q "\"failure\": \"correctness \\[$check\\]" "$dir/verdict.json"; then
      echo "ok      $name (exit 129, $check, caught on attempt $attempt of 3)"
      return 0
    fi
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 129 ]; then
      break
    fi
    echo "attempt $attempt of 3: exit $rc, not a $check failure"
  done
  echo "FAILED  $name: exit $rc, wanted 129 with $check"
  failed=1
  return 1
}

step "diff redis-outage seed 1" 0 "$out/diff-redis-outage.log" -- \
  "$chaos" diff scenarios/redis-outage.toml --seed 1 --out "$out/redis-outage"
caught "planted journal-volatile: redis-outage seed 3 must fail" acked_writes \
  "$out/planted-journal-volatile" -- \
  env SPIRAL_PLANTED_BUG=journal-volatile "$chaos" run scenarios/redis-outage.toml --seed 3 \
  --spiral-bin "$rel/spiral-planted" --out "$out/planted-journal-volatile"

# planted BUG CHECK -- ARGS...: the slow-clients run on the planted server BUG must fail with CHECK.
planted() {
  local bug=$1 check=$2
  shift 3
  caught "planted $bug: bad-clients seed 4 must fail with $check" "$check" "$out/planted-$bug" -- \
    env SPIRAL_PLANTED_BUG="$bug" "$chaos" run scenarios/bad-clients.toml --seed 4 \
    --spiral-bin "$rel/spiral-planted" --out "$out/planted-$bug" "$@"
}

step "slow clients: bad-clients seed 4, open-file limit 64" 0 "$out/slow-clients.log" -- \
  "$chaos" run scenarios/bad-clients.toml --seed 4 --fd-limit 64 --out "$out/slow-clients"

if [ "$mode" = all ]; then
  planted ws-no-linger close_codes --
  planted queue-unbounded-bytes close_codes --
  planted no-header-timeout slow_clients -- --fd-limit 64
fi

[ "$failed" -eq 0 ] && echo "real world: every step ended as it must" || echo "real world: FAILED"
exit "$failed"
