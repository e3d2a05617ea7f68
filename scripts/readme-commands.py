#!/usr/bin/env python3
"""Run the README's table of everyday commands exactly as written.

    scripts/readme-commands.py list          print every row: its name, how it is checked, the command
    scripts/readme-commands.py run           run every row in order (below); exit 1 if any fails
    scripts/readme-commands.py run --from NAME   the same, starting at one row (while fixing it)
    scripts/readme-commands.py get NAME      print one row's command (the test command runs some
                                             rows itself, from here, so they cannot drift apart)
    scripts/readme-commands.py self-test     show that a broken row is caught

Every row of the table under "## Everyday commands" in README.md must have an entry in ROWS
below, and every entry a row: a command added to the README without a check here, or a check
whose row is gone, fails the run. Each row is run from the repository root in one shared
environment, in table order, under `bash -c`:

- `run`: the command must exit with one of the allowed codes within its time bound, and its
  output must match the expected pattern;
- `env`: an `export …` line; the variables it sets are kept for the rows after it;
- `serve`: a server started in the background; it must answer /health within its bound, serves
  the rows after it, and is stopped (SIGTERM, then must exit 0) when the run ends;
- `bounded`: a command longer than CI's budget (a full benchmark run); it must still be running,
  having printed nothing that looks like an error, when its bound stops it — or have exited 0;
- `test.sh`: the test command runs this row's command itself (`get NAME`), as a step of its own.

Files the commands write into the checkout (run.jsonl, summary.json) are removed afterwards.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name (the table's "what" column) -> how the row is checked.
ROWS = {
    "one simulated run, replayable, with its trace": dict(
        kind="run", timeout=900, codes=[0], expect=r"^PASS$", creates=["run.jsonl"]),
    "the same run twice, traces compared": dict(
        kind="run", timeout=300, codes=[0], expect=r"^determinism: two runs, identical traces"),
    "a sweep, sharded, with a JSON summary": dict(
        kind="run", timeout=600, codes=[0], expect=r"^all \d+ runs passed",
        creates=["summary.json"]),
    "a planted bug under the simulator": dict(
        kind="run", timeout=900, codes=[129], expect=r"^FAIL "),
    "shrink a failure to its minimal scenario": dict(
        kind="run", timeout=600, codes=[129], expect=r"^minimal scenario"),
    "the engine-only model (no network)": dict(
        kind="run", timeout=600, codes=[0], expect=r"^all 1000 runs passed"),
    "a secret for the server and its tokens": dict(kind="env", timeout=30),
    "run the server": dict(kind="serve", timeout=900, health="http://127.0.0.1:3000/health"),
    "mint a token": dict(kind="env", timeout=300),
    "a server's status": dict(kind="run", timeout=120, codes=[0], expect=r'"breaker_state"'),
    "a server's event stream": dict(kind="run", timeout=120, codes=[0], expect=r'"event"'),
    "open-loop WebSocket load": dict(
        # 5 is a generator that fell behind its own schedule on a busy machine: the row ran and
        # said its figures are inconclusive (speed never fails the test command).
        kind="run", timeout=600, codes=[0, 5], expect=r"^\s*5000/s .* err\s+0\s", forbid=r"err\s+[1-9]"),
    "rebuild statistics against storage": dict(
        kind="run", timeout=300, codes=[0], expect=r"^spiral repair: storage"),
    "SLO gate": dict(
        # 1 is a missed target on a busy machine: the gate ran and measured every figure; the
        # figure is the machine's, not the command's (speed never fails the test command).
        # 2 (a measurement could not run) and a panic fail.
        kind="run", timeout=1200, codes=[0, 1], expect=r"rebuild"),
    # A full benchmark run takes far longer than CI's budget: the row is checked for a minute
    # (it builds and starts without an error); the workflow's slo job runs the benchmarks.
    "criterion benchmarks": dict(kind="bounded", timeout=60),
    "the seeded fault proxy": dict(kind="serve", timeout=900, health="http://127.0.0.1:8474/version"),
    "a scenario in the simulator and for real, verdicts compared": dict(
        kind="run", timeout=600, codes=[0], expect=r"^identical verdicts$"),
    "the real-process world's CI set": dict(kind="test.sh"),
    "loom models": dict(kind="test.sh"),
    "planted-bug demonstrations": dict(kind="test.sh"),
    "WebSocket conformance (Autobahn|Testsuite)": dict(kind="test.sh"),
}

ERRORISH = re.compile(r"^error(\[|:)|panicked at|^Error: ", re.M)


def table(readme):
    """The (what, command) rows of the everyday-commands table."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"^## Everyday commands\n(.*?)(?=^## )", text, re.M | re.S)
    if not m:
        sys.exit(f"{readme}: no '## Everyday commands' section")
    rows = []
    for line in m.group(1).splitlines():
        if not line.startswith("|"):
            continue
        # Cells split at unescaped pipes; `\|` is a literal pipe inside a cell.
        cells = [c.strip().replace("\\|", "|")
                 for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) < 2 or cells[0] in ("what", "") or set(cells[0]) <= set("-"):
            continue
        code = re.fullmatch(r"`([^`]+)`(.*)", cells[1])
        if not code:
            sys.exit(f"{readme}: the command of row '{cells[0]}' is not one code span: {cells[1]}")
        rows.append((cells[0], code.group(1)))
    return rows


def checked_rows(readme):
    rows = table(readme)
    names = [w for w, _ in rows]
    problems = [f"README row without a check in scripts/readme-commands.py: '{w}'"
                for w in names if w not in ROWS]
    problems += [f"check for a row the README no longer has: '{w}'" for w in ROWS if w not in names]
    if problems:
        sys.exit("\n".join(problems))
    return rows


def killpg(p):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_rows(readme, start=None):
    rows = checked_rows(readme)
    if start is not None:
        names = [w for w, _ in rows]
        if start not in names:
            sys.exit(f"no row '{start}' in the README's table")
        rows = rows[names.index(start):]
    env = dict(os.environ)
    servers = []
    failures = 0
    started = time.monotonic()
    try:
        for what, cmd in rows:
            spec = ROWS[what]
            kind = spec["kind"]
            t0 = time.monotonic()
            if kind == "test.sh":
                print(f"--  {what}: run by scripts/test.sh as a step of its own", flush=True)
                continue
            print(f"==> {what}: {cmd}", flush=True)
            ok, note = True, ""
            if kind == "env":
                out = subprocess.run(["bash", "-c", f"{cmd}\nenv -0"], cwd=ROOT, env=env,
                                     capture_output=True, timeout=spec["timeout"])
                if out.returncode != 0:
                    ok, note = False, f"exit {out.returncode}: {out.stderr.decode()[-2000:]}"
                else:
                    new = dict(kv.split("=", 1) for kv in out.stdout.decode().split("\0") if "=" in kv)
                    added = sorted(k for k in new if env.get(k) != new[k] and k not in ("_", "SHLVL", "PWD", "OLDPWD"))
                    if not added:
                        ok, note = False, "set no variable"
                    env = new
                    note = note or "sets " + ", ".join(added)
            elif kind == "serve":
                log = tempfile.NamedTemporaryFile(prefix="readme-serve-", suffix=".log", delete=False)
                p = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
                servers.append((what, p, log.name))
                deadline = t0 + spec["timeout"]
                while True:
                    try:
                        with urllib.request.urlopen(spec["health"], timeout=1) as r:
                            if r.status == 200:
                                note = f"answers {spec['health']}"
                                break
                    except OSError:
                        pass
                    if p.poll() is not None or time.monotonic() > deadline:
                        ok = False
                        note = f"exit {p.poll()}" if p.poll() is not None else "no /health within the bound"
                        with open(log.name, errors="replace") as f:
                            note += ":\n" + f.read()[-3000:]
                        break
                    time.sleep(0.5)
            else:
                p = subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    raw, _ = p.communicate(timeout=spec["timeout"])
                    rc = p.returncode
                except subprocess.TimeoutExpired:
                    killpg(p)
                    raw, _ = p.communicate()
                    rc = None
                out = raw.decode(errors="replace")
                # Compiler output is not the command's: look at what the program printed.
                prog = "\n".join(l for l in out.splitlines()
                                 if not re.match(r"\s*(Compiling|Finished|Running|Blocking|Downloaded|Downloading)\b", l))
                if kind == "bounded":
                    if rc not in (None, 0):
                        ok, note = False, f"exit {rc}"
                    elif ERRORISH.search(prog):
                        ok, note = False, "printed an error"
                    else:
                        note = "exit 0" if rc == 0 else f"still running without error after {spec['timeout']} s (bound)"
                else:
                    if rc is None:
                        ok, note = False, f"did not finish within {spec['timeout']} s"
                    elif rc not in spec["codes"]:
                        ok, note = False, f"exit {rc}, wanted {spec['codes']}"
                    elif not re.search(spec["expect"], prog, re.M):
                        ok, note = False, f"output lacks /{spec['expect']}/"
                    elif spec.get("forbid") and re.search(spec["forbid"], prog, re.M):
                        ok, note = False, f"output has /{spec['forbid']}/"
                    else:
                        note = f"exit {rc}"
                if not ok:
                    note += ":\n" + out[-3000:]
            dt = time.monotonic() - t0
            print(f"    {'ok' if ok else 'FAILED'} ({dt:.0f} s) {note}", flush=True)
            failures += not ok
    finally:
        for what, p, log in servers:
            if p.poll() is None:
                # The whole group: bash, and the server `cargo run` replaced itself with.
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    rc = p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    killpg(p)
                    rc = "none (killed after 30 s)"
                if rc != 0:
                    print(f"FAILED {what}: after SIGTERM exit {rc}", flush=True)
                    failures += 1
                else:
                    print(f"    {what}: stopped by SIGTERM, exit 0", flush=True)
            os.unlink(log)
        for what, _ in rows:
            for f in ROWS[what].get("creates", []):
                path = os.path.join(ROOT, f)
                if os.path.exists(path):
                    os.unlink(path)
    print(f"readme commands: {len(rows)} rows, {failures} failed, {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


def self_test():
    """A README whose command is broken, or whose row has no check, must fail."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    bad = text.replace("-- sim scenarios/smoke.toml --seed 42 --check-determinism",
                       "-- sim scenarios/smoke.toml --seed 42 --check-determinism --no-such-flag", 1)
    assert bad != text, "self-test: the README's determinism row has moved; update the self-test"
    extra = text.replace("| what | command |\n|---|---|\n",
                         "| what | command |\n|---|---|\n| unchecked | `true` |\n", 1)
    assert extra != text, "self-test: the README's table header has moved"
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "README.md")
        with open(p, "w", encoding="utf-8") as f:
            f.write(extra)
        r = subprocess.run([sys.executable, __file__, "list", p], capture_output=True, text=True)
        assert r.returncode != 0 and "without a check" in r.stderr, r
        with open(p, "w", encoding="utf-8") as f:
            f.write(bad)
        cmd = dict(table(p))["the same run twice, traces compared"]
        out = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert out.returncode not in ROWS["the same run twice, traces compared"]["codes"], out
    print("self-test: an unchecked row and a broken command are both caught")
    return 0


def main():
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    mode, rest = args[0], args[1:]
    readme = os.path.join(ROOT, "README.md")
    if mode == "list":
        for what, cmd in checked_rows(rest[0] if rest else readme):
            print(f"{what}\t{ROWS[what]['kind']}\t{cmd}")
        return 0
    if mode == "get" and len(rest) == 1:
        rows = dict(checked_rows(readme))
        if rest[0] not in rows:
            sys.exit(f"no row '{rest[0]}' in the README's table")
        print(rows[rest[0]])
        return 0
    if mode == "run":
        return run_rows(readme, rest[1] if rest[:1] == ["--from"] and len(rest) == 2 else None)
    if mode == "self-test":
        return self_test()
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
