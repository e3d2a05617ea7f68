#!/usr/bin/env python3
"""Compare an Autobahn|Testsuite fuzzingclient run against the committed expected results.

    compare.py --spec SPEC --expected EXPECTED INDEX_JSON [--update]

INDEX_JSON is the run's `reports/servers/index.json`. For every case this compares `behavior`,
`behaviorClose` and `remoteCloseCode` (the close code the server sent, or null when it sent
none) and prints each case that differs, each case missing from either side, and each case
whose behavior is not acceptable:

- `behavior` must be OK, NON-STRICT or INFORMATIONAL; UNIMPLEMENTED only for a case that the
  spec's `exclude-cases` names (an extension the server does not offer);
- `behaviorClose` must be OK or INFORMATIONAL.

Exit status: 0 when the run matches EXPECTED and every case is acceptable, 1 otherwise, 2 on
unreadable input. With --update, EXPECTED is rewritten from the run first (the acceptability
check still applies), for a deliberate change of behavior or of the suite's version.
"""

import argparse
import fnmatch
import json
import sys
from collections import Counter

FIELDS = ("behavior", "behaviorClose", "remoteCloseCode")
GOOD_BEHAVIOR = {"OK", "NON-STRICT", "INFORMATIONAL"}
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    """`9.10.2` sorts after `9.2.1`."""
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def load(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"compare.py: cannot read {what} {path}: {e}", file=sys.stderr)
        sys.exit(2)


def excluded(case_id, patterns):
    return any(fnmatch.fnmatchcase(case_id, p) for p in patterns)


def render(agent, suite, cases):
    """One line per case, so that a change shows as a one-line diff."""
    lines = [
        "{",
        f'  "agent": {json.dumps(agent)},',
        f'  "autobahntestsuite": {json.dumps(suite)},',
        '  "cases": {',
    ]
    ids = sorted(cases, key=case_key)
    for i, cid in enumerate(ids):
        comma = "," if i + 1 < len(ids) else ""
        body = json.dumps({k: cases[cid][k] for k in FIELDS})
        lines.append(f"    {json.dumps(cid)}: {body}{comma}")
    lines += ["  }", "}", ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("index", help="reports/servers/index.json of the run")
    ap.add_argument("--spec", required=True, help="the fuzzingclient spec that was run")
    ap.add_argument("--expected", required=True, help="the committed expected results")
    ap.add_argument("--suite-version", default="unknown", help="recorded with --update")
    ap.add_argument("--update", action="store_true", help="rewrite EXPECTED from the run")
    args = ap.parse_args()

    spec = load(args.spec, "spec")
    agents = [s.get("agent", "?") for s in spec.get("servers", [])]
    if len(agents) != 1:
        print("compare.py: the spec must name exactly one server", file=sys.stderr)
        return 2
    agent = agents[0]
    exclusions = spec.get("exclude-cases", [])
    index = load(args.index, "run results")
    if agent not in index:
        print(f"compare.py: no results for agent {agent!r} in {args.index}", file=sys.stderr)
        return 2
    actual = {cid: {k: r.get(k) for k in FIELDS} for cid, r in index[agent].items()}

    problems = []
    for cid in sorted(actual, key=case_key):
        r = actual[cid]
        b, c = r["behavior"], r["behaviorClose"]
        if not (b in GOOD_BEHAVIOR or (b == "UNIMPLEMENTED" and excluded(cid, exclusions))):
            problems.append(f"  {cid}: behavior {b} is not acceptable ({json.dumps(r)})")
        if c not in GOOD_CLOSE:
            problems.append(f"  {cid}: behaviorClose {c} is not acceptable ({json.dumps(r)})")
        if excluded(cid, exclusions):
            problems.append(f"  {cid}: ran although the spec excludes it")

    if args.update:
        with open(args.expected, "w", encoding="utf-8") as f:
            f.write(render(agent, args.suite_version, actual))
        print(f"compare.py: wrote {len(actual)} cases to {args.expected}")

    expected_doc = load(args.expected, "expected results")
    expected = expected_doc.get("cases", {})
    diffs = []
    for cid in sorted(set(actual) | set(expected), key=case_key):
        if cid not in expected:
            diffs.append(f"  {cid}: not in the expected results; ran with {json.dumps(actual[cid])}")
        elif cid not in actual:
            diffs.append(f"  {cid}: expected {json.dumps(expected[cid])} but did not run")
        else:
            changed = [k for k in FIELDS if actual[cid][k] != expected[cid].get(k)]
            if changed:
                what = ", ".join(
                    f"{k} {json.dumps(expected[cid].get(k))} -> {json.dumps(actual[cid][k])}"
                    for k in changed
                )
                diffs.append(f"  {cid}: {what}")

    counts = Counter(r["behavior"] for r in actual.values())
    summary = ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))
    codes = Counter(str(r["remoteCloseCode"]) for r in actual.values())
    print(f"autobahn: {len(actual)} cases for agent {agent!r}: {summary}")
    print("autobahn: close codes sent by the server: "
          + ", ".join(f"{c}: {n}" for c, n in sorted(codes.items())))
    if diffs:
        print(f"autobahn: {len(diffs)} case(s) differ from {args.expected}:")
        print("\n".join(diffs))
    if problems:
        print(f"autobahn: {len(problems)} unacceptable result(s):")
        print("\n".join(problems))
    if diffs or problems:
        print("autobahn: FAILED (see the per-case reports next to index.json; after a deliberate "
              "change, regenerate the expected results: conformance/autobahn/README.md)")
        return 1
    print(f"autobahn: all {len(actual)} cases match {args.expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
