#!/usr/bin/env bash
# The mutation score of the server's decision code against the simulation sweep
# (docs/testing.md, "Mutation score"). cargo-mutants takes its scope, test command and profile
# from .cargo/mutants.toml; each mutant is rebuilt in the `mutants` profile and judged by
# harness/tests/mutation_sweep.rs (every shipped scenario over a fixed seed range).
#
#   scripts/mutants.sh [--shard K/N] [--min PCT] [--out DIR] [--jobs J] [-- CARGO-MUTANTS ARGS…]
#       run the mutants (all, or shard K of N, K counted from 0, mutants dealt round-robin so every
#       shard samples every file), then score them; exit 1 when the score is under PCT
#       (default 90); the baseline's exit status when the unmutated tree fails the sweep; the
#       exit status of cargo-mutants when it could not judge the mutants (1: usage).
#   scripts/mutants.sh score [--min PCT] DIR…
#       score finished runs together (each DIR is a mutants.out or holds one), e.g. the shards of
#       a matrix; a mutant in several runs counts once, as the last of them judged it.
#
# The score is caught / (caught + missed); mutants that timed out (a hang: the sweep did not
# finish) and unviable ones (they do not build) are counted apart and listed.
#
# Needs cargo-mutants and cargo-nextest (`cargo install --locked cargo-mutants cargo-nextest`).
# Each mutant costs an incremental rebuild (about a minute on 2 cores) plus the sweep.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2
  exit 1
}

score() {
  local min=90
  if [ "${1:-}" = --min ]; then
    min=$2
    shift 2
  fi
  [ $# -gt 0 ] || usage
  python3 - "$min" "$@" <<'EOF'
import sys
from pathlib import Path

minimum = float(sys.argv[1])
kinds = ("caught", "missed", "timeout", "unviable")
# A mutant in several runs counts once, with its outcome in the last of them (a rerun after a
# checker change overrides the first verdict).
outcome = {}
for d in sys.argv[2:]:
    out = Path(d)
    if not (out / "outcomes.json").is_file():
        out = out / "mutants.out"
    if not (out / "outcomes.json").is_file():
        sys.exit(f"mutants: {out} holds no finished run (no outcomes.json)")
    for k in kinds:
        f = out / f"{k}.txt"
        if f.is_file():
            for line in f.read_text().splitlines():
                if line.strip():
                    outcome[line] = k
found = {k: [m for m, o in outcome.items() if o == k] for k in kinds}
caught, missed = len(found["caught"]), len(found["missed"])
judged = caught + missed
tested = sum(len(v) for v in found.values())
print(f"mutants tested: {tested}  caught: {caught}  missed: {missed}  "
      f"timeout: {len(found['timeout'])}  unviable: {len(found['unviable'])}")
for k in ("missed", "timeout"):
    for name in sorted(found[k]):
        print(f"  {k:8} {name}")
if judged == 0:
    sys.exit("mutants: no mutant was caught or missed: nothing to score")
pct = 100.0 * caught / judged
verdict = "ok" if pct >= minimum else "UNDER TARGET"
print(f"mutation score: {caught}/{judged} = {pct:.1f} % (target >= {minimum:g} %): {verdict}")
sys.exit(0 if pct >= minimum else 1)
EOF
}

if [ "${1:-}" = score ]; then
  shift
  score "$@"
  exit
fi

shard="" min=90 out=. jobs=1
while [ $# -gt 0 ]; do
  case $1 in
    --shard) shard=$2; shift 2 ;;
    --min) min=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "mutants: unknown option $1" >&2; usage ;;
  esac
done

# The baseline: the unmutated tree must pass the sweep (cargo-mutants 27.1's own baseline tests
# the mutated package instead of `test_package`; see .cargo/mutants.toml). cargo-mutants builds
# its scratch copy into the same target directory under the same artifact names, so after a run
# the workspace's `mutants`-profile artifacts are the last mutant's, and cargo, seeing sources
# older than them, would reuse them here: clean them first.
echo "mutants: baseline (the unmutated sweep)"
cargo clean --profile mutants -p spiral-server -p spiral-history -p spiral-harness
cargo nextest run --cargo-profile mutants --locked -p spiral-harness --test mutation_sweep

# --timeout: the sweep takes under 30 s on a busy 2-core machine; a mutant that makes it hang is
# cut off after 180 s and counted as a timeout.
args=(--jobs "$jobs" --output "$out" --baseline skip --timeout 180 --build-timeout 1200)
[ -n "$shard" ] && args+=(--sharding round-robin --shard "$shard")
mkdir -p "$out"
echo "mutants: cargo mutants ${args[*]} $*"
rc=0
cargo mutants "${args[@]}" "$@" || rc=$?
# 0: every mutant caught; 2: some missed; 3: some timed out. Anything else judged nothing.
case $rc in
  0 | 2 | 3) score --min "$min" "$out" ;;
  *) echo "mutants: cargo mutants exited $rc: no score" >&2; exit "$rc" ;;
esac
