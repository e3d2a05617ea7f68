#!/usr/bin/env bash
# Planted-bug demonstrations: every verification suite must catch the deliberately broken variant
# it exists for. Each line builds with `--features planted-bugs`, selects one bug with
# SPIRAL_PLANTED_BUG, runs one test, and REQUIRES that test to fail. A demonstration that passes
# means the suite has lost its teeth, and this script fails.
#
#   scripts/planted-bugs.sh [LOOM_TARGET_DIR]     (default: $LOOM_TARGET_DIR, else $CARGO_TARGET_DIR-loom)
set -uo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
loom_target=${1:-${LOOM_TARGET_DIR:-${CARGO_TARGET_DIR}-loom}}
logs=$(mktemp -d)
caught=0
missed=0

# demo SUITE BUG TEST -- CARGO ARGS…
demo() {
  local suite=$1 bug=$2 test=$3
  shift 4
  local log="$logs/$bug-$test.log"
  SPIRAL_PLANTED_BUG=$bug "$@" >"$log" 2>&1
  local rc=$?
  if [ $rc -ne 0 ] && grep -qE "^test $test \.\.\. FAILED" "$log"; then
    caught=$((caught + 1))
    local why
    why=$(grep -m1 -E "panicked at|Test failed|minimal failing" -A1 "$log" | tr '\n' ' ' | cut -c1-200)
    printf 'caught  %-10s %-20s %-55s %s\n' "$suite" "$bug" "$test" "$why"
  else
    missed=$((missed + 1))
    printf 'MISSED  %-10s %-20s %-55s (exit %s; log below)\n' "$suite" "$bug" "$test" "$rc"
    tail -30 "$log"
  fi
}

loom() {
  CARGO_TARGET_DIR=$loom_target RUSTFLAGS="--cfg spiral_loom" \
    cargo test -p spiral-server --release --locked --features planted-bugs "$@"
}
chaos() {
  cargo test -p spiral-chaos --locked --features spiral-server/planted-bugs "$@"
}

demo loom     count-race          loom_concurrent_stores_keep_invariant_1 -- loom --test loom_engine loom_concurrent_stores_keep_invariant_1
demo loom     double-collect      loom_collect_racing_gc_never_collects_twice -- loom --test loom_engine loom_collect_racing_gc_never_collects_twice
demo loom     breaker-skips-probe loom_breaker_transitions_stay_legal -- loom --test loom_resilience loom_breaker_transitions_stay_legal
demo loom     journal-drop        loom_journal_replay_racing_writes_loses_nothing -- loom --test loom_resilience loom_journal_replay_racing_writes_loses_nothing
demo proptest rebuild-skip        engine_model_memory -- chaos --test engine_model engine_model_memory
demo proptest keys-prefix         adapter_contract_memory -- chaos --test adapter_contract adapter_contract_memory
demo redis    replay-window       concurrent_handshakes_with_one_jti_across_instances_admit_exactly_one -- chaos --test shared_state_redis concurrent_handshakes_with_one_jti_across_instances_admit_exactly_one
demo outage   journal-drop        redis_outage_loses_no_acknowledged_write -- chaos --test redis_outage redis_outage_loses_no_acknowledged_write
demo turmoil  journal-drop        a_partition_mid_workload_loses_no_acknowledged_write -- \
  cargo test -p spiral-harness --locked --features planted-bugs --test turmoil_redis a_partition_mid_workload_loses_no_acknowledged_write
# What the simulator cannot model (a stalled disk, start-up settings, a probe storm against an
# open breaker, stream payload shapes): the server's own tests on real files and sockets.
unit() {
  cargo test -p spiral-server --locked --features planted-bugs --lib "$@"
}
demo unit     embedded-inline     storage::embedded::tests::a_stalled_disk_holds_a_blocking_thread_and_the_callers_timeout_fires -- unit storage::embedded::tests::a_stalled_disk_holds_a_blocking_thread_and_the_callers_timeout_fires
demo unit     ready-bypasses-breaker resilience::tests::the_ready_probe_reads_through_the_breaker_and_never_writes -- unit resilience::tests::the_ready_probe_reads_through_the_breaker_and_never_writes
demo unit     sigil-space-unchecked config::tests::a_sigil_space_too_small_for_the_capacity_is_refused_naming_both -- unit config::tests::a_sigil_space_too_small_for_the_capacity_is_refused_naming_both
demo unit     insight-array-leaks api::stream::tests::insight_content_goes_from_an_array_of_insights_too -- unit api::stream::tests::insight_content_goes_from_an_array_of_insights_too
demo sockets  ws-no-linger        ws::a_frame_far_over_the_limit_still_gets_its_1009 -- \
  cargo test -p spiral-server --locked --features planted-bugs --test surfaces ws::a_frame_far_over_the_limit_still_gets_its_1009
demo unit     auth-volatile       auth::shared::tests::used_and_revoked_tokens_survive_a_restart_on_durable_state -- unit auth::shared::tests::used_and_revoked_tokens_survive_a_restart_on_durable_state

# The harness sweep: must end with exit 129 (correctness) and print a replay command.
# verdict CAUGHT SUITE BUG WHAT LOG DETAIL: count one demonstration (CAUGHT is yes or no) and
# print its line; a miss also prints the end of its log.
verdict() {
  local ok=$1 suite=$2 bug=$3 what=$4 log=$5 detail=$6
  if [ "$ok" = yes ]; then
    caught=$((caught + 1))
    printf 'caught  %-10s %-20s %-55s %s\n' "$suite" "$bug" "$what" "$detail"
  else
    missed=$((missed + 1))
    printf 'MISSED  %-10s %-20s %-55s %s\n' "$suite" "$bug" "$what" "$detail"
    tail -20 "$log"
  fi
}

log="$logs/harness-rebuild-skip.log"
SPIRAL_PLANTED_BUG=rebuild-skip cargo run -q -p spiral-harness --locked --features planted-bugs -- \
  sweep --seeds 0..20 >"$log" 2>&1
rc=$?
ok=no
[ $rc -eq 129 ] && grep -q "replay: SPIRAL_PLANTED_BUG=rebuild-skip" "$log" && ok=yes
verdict $ok harness rebuild-skip "sweep --seeds 0..20 (exit $rc)" "$log" "$(grep -m1 '^FAIL' "$log" | cut -c1-120)"

# The simulated world: for each bug, a sweep of the scenario that targets it must fail within 200
# seeds with exit 129 (correctness; a third argument names another class's code, e.g. 128 for
# liveness; a fourth, another seed range, for a bug only rare compositions reach); the replay command it prints must reproduce the failing
# run's trace byte for byte (same digest) — twice, with --check-determinism; and the artifacts
# it leaves (--artifacts) must hold a replay.sh that reproduces the identical trace file and a
# shrunk minimal.toml that still fails.
sim_demo() {
  local bug=$1 scenario=$2 want=${3:-129} seeds=${4:-0..200}
  local log="$logs/sim-$bug.log" art="$logs/art-$bug"
  SPIRAL_PLANTED_BUG=$bug cargo run -q --release -p spiral-harness --locked --features planted-bugs -- \
    sweep "scenarios/$scenario.toml" --seeds "$seeds" --fail-fast --artifacts "$art" >"$log" 2>&1
  local rc=$?
  local fail digest replay dir
  fail=$(grep -m1 '^FAIL ' "$log")
  digest=$(grep -m1 '^  trace ' "$log" | awk '{print $2}')
  replay=$(grep -m1 '^  trace ' "$log" | sed 's/.*replay: //')
  dir=$(grep -m1 '^  artifacts: ' "$log" | awk '{print $2}')
  if [ $rc -ne "$want" ] || [ -z "$replay" ] || [ -z "$dir" ]; then
    missed=$((missed + 1))
    printf 'MISSED  %-10s %-20s %-55s (exit %s)\n' sim "$bug" "sweep $scenario $seeds" "$rc"
    tail -20 "$log"
    return
  fi
  local rlog="$logs/sim-$bug-replay.log"
  eval "$replay --check-determinism" >"$rlog" 2>&1
  local rrc=$?
  if ! { [ $rrc -eq "$want" ] && grep -q "^trace $digest " "$rlog" && grep -q "^determinism: two runs, identical traces" "$rlog"; }; then
    missed=$((missed + 1))
    printf 'MISSED  %-10s %-20s %-55s (replay exit %s, wanted trace %s)\n' sim "$bug" "$replay" "$rrc" "$digest"
    tail -20 "$rlog"
    return
  fi
  local alog="$logs/sim-$bug-artifacts.log"
  local seed=${dir##*seed-}
  if ! bash "$dir/replay.sh" >"$alog" 2>&1 || ! grep -q '^replay: identical trace' "$alog"; then
    missed=$((missed + 1))
    printf 'MISSED  %-10s %-20s %-55s (its replay.sh did not reproduce the trace)\n' sim "$bug" "$dir/replay.sh"
    tail -20 "$alog"
    return
  fi
  SPIRAL_PLANTED_BUG=$bug cargo run -q --release -p spiral-harness --locked --features planted-bugs -- \
    sim "$dir/minimal.toml" --seed "$seed" >>"$alog" 2>&1
  local mrc=$?
  if [ $mrc -ne "$want" ]; then
    missed=$((missed + 1))
    printf 'MISSED  %-10s %-20s %-55s (exit %s, wanted %s)\n' sim "$bug" "$dir/minimal.toml --seed $seed" "$mrc" "$want"
    tail -20 "$alog"
    return
  fi
  caught=$((caught + 1))
  printf 'caught  %-10s %-20s %-55s %s\n' sim "$bug" "sweep $scenario (exit $want, replay trace $digest, replay.sh, minimal.toml)" "$(echo "$fail" | cut -c1-150)"
}

sim_demo count-race          gc-pressure
sim_demo ack-before-persist  server-crash-restart
sim_demo replay-window       multi-server
sim_demo journal-drop        redis-outage
sim_demo cancel-unsafe       gc-pressure
sim_demo collect-during-gc   gc-pressure
sim_demo binary-unlimited    bad-clients
sim_demo journal-volatile    redis-outage
sim_demo jti-repeats         server-crash-restart
sim_demo refresh-forever     server-crash-restart
sim_demo bucket-wall-clock   chaos 128
sim_demo no-user-cap         bad-clients
sim_demo noise-keeps-alive   bad-clients
sim_demo gc-unfair           gc-pressure
sim_demo auth-volatile       server-crash-restart
sim_demo no-header-timeout   bad-clients
sim_demo queue-unbounded-bytes bad-clients
sim_demo journal-full-lands  redis-outage 129 200..400
sim_demo shutdown-abandons-sockets server-crash-restart
sim_demo limiter-never-sweeps bad-clients
sim_demo in-doubt-dropped     chaos
sim_demo ws-no-linger         bad-clients

# The coverage gate must fail when a required marker is out of the sweep's reach: the smoke
# scenario alone reaches none of the fault paths the CI sweep must reach, so the same gate over it
# exits 4 and names the markers it missed.
coverage_demo() {
  local log="$logs/coverage-gate.log"
  cargo run -q --release -p spiral-harness --locked -- \
    sweep scenarios/smoke.toml --seeds 0..5 --coverage scenarios/coverage/ci.toml >"$log" 2>&1
  local rc=$? ok=no
  [ $rc -eq 4 ] && grep -q '^coverage gate: FAILED, required markers never reached: .*journal.full' "$log" && ok=yes
  verdict $ok coverage "(a marker out of reach)" "sweep smoke --coverage (exit $rc)" "$log" \
    "$(grep -m1 '^coverage gate' "$log" | cut -c1-100)"
}
coverage_demo

# The workflow's determinism step, extracted from the workflow and run as Actions runs it
# (`bash -e`, no pipefail), must fail on a planted nondeterminism: an unseeded value in a trace line.
det_demo() {
  local log="$logs/determinism.log" script="$logs/determinism-step.sh"
  cargo build -q --release -p spiral-harness --locked --features planted-bugs >"$log" 2>&1
  python3 scripts/check-workflow.py step .github/workflows/chaos-test.yml simulation \
    "Determinism (same seed twice, traces compared)" shard=1 >"$script"
  SPIRAL_PLANTED_BUG=nondeterministic-trace bash -e "$script" >>"$log" 2>&1
  local rc=$? ok=no
  [ $rc -eq 3 ] && grep -q '^FAIL determinism' "$log" && ok=yes
  verdict $ok workflow nondeterministic-trace "the Determinism step under bash -e (exit $rc)" "$log" \
    "$(grep -m1 '^FAIL determinism' "$log" | cut -c1-100)"
}
det_demo

# WebSocket conformance: with the read-error close codes taken out (the connection just ends on a
# protocol violation), the Autobahn run must no longer match its expected results.
# And with a close that overtakes the frames queued before it, the echo of a valid message sent
# just before a protocol violation is lost: cases such as 3.2 and 5.15 fall to NON-STRICT.
autobahn_demo() {
  local bug=$1 log="$logs/autobahn-$1.log"
  SPIRAL_PLANTED_BUG=$bug AUTOBAHN_FEATURES=planted-bugs AUTOBAHN_OUT="$logs/autobahn-$bug" \
    scripts/autobahn.sh >"$log" 2>&1
  local rc=$? ok=no
  [ $rc -eq 1 ] && grep -q '^autobahn: FAILED' "$log" && ok=yes
  verdict $ok autobahn "$bug" "scripts/autobahn.sh (exit $rc)" "$log" "$(grep -m1 'case(s) differ' "$log")"
}
autobahn_demo ws-silent-close
autobahn_demo close-overtakes-queue

echo "$caught caught, $missed missed"
rm -rf "$logs"
[ "$missed" -eq 0 ]
