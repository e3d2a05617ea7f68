#!/usr/bin/env python3
"""Checks on the GitHub Actions workflows that actionlint does not make.

  check-workflow.py pipes [FILE...]      every `run:` block with a pipe runs under a shell with
                                         pipefail (`shell: bash` on the step, the job's or the
                                         workflow's `defaults.run`); exit 1 listing each one that
                                         does not
  check-workflow.py step FILE JOB NAME [KEY=VALUE...]
                                         print the `run:` script of a step, `${{ matrix.KEY }}`
                                         replaced by VALUE, so a script can run exactly what CI runs
  check-workflow.py self-test            the pipe check against known-good and known-bad workflows

Why: on Actions a `run:` step without `shell:` runs `bash -e {0}`, without pipefail, so in
`cmd | grep x` grep's status wins and a failing `cmd` passes the job. `shell: bash` runs
`bash --noprofile --norc -eo pipefail {0}`.
"""
import glob
import sys

import yaml


def has_pipe(script):
    """True when the shell text has a `|` pipe outside quotes and comments (`||` is not one)."""
    i, n = 0, len(script)
    quote = None
    at_word_start = True
    while i < n:
        c = script[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif quote == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                quote = None
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "#" and at_word_start:
            while i < n and script[i] != "\n":
                i += 1
            continue
        elif c == "|":
            if i + 1 < n and script[i + 1] == "|":
                i += 2
                at_word_start = True
                continue
            return True
        at_word_start = c in " \t\n;&(|"
        i += 1
    return False


def pipefail_shell(shell):
    """Whether a `shell:` value runs with pipefail."""
    if shell is None:
        return False
    shell = str(shell).strip()
    return shell == "bash" or ("bash" in shell and "pipefail" in shell)


def default_shell(node):
    return (((node or {}).get("defaults") or {}).get("run") or {}).get("shell")


def pipe_findings(path):
    with open(path) as f:
        wf = yaml.safe_load(f)
    out = []
    wf_shell = default_shell(wf)
    for job_id, job in (wf.get("jobs") or {}).items():
        job_shell = default_shell(job)
        for n, step in enumerate(job.get("steps") or [], 1):
            run = step.get("run")
            if run is None or not has_pipe(run):
                continue
            shell = step.get("shell") or job_shell or wf_shell
            if not pipefail_shell(shell):
                name = step.get("name") or run.strip().splitlines()[0]
                out.append(
                    f"{path}: job {job_id}, step {n} ({name!r}): a pipe without pipefail "
                    f"(shell: {shell or 'default bash -e'}); add `shell: bash` or remove the pipe"
                )
    return out


def cmd_pipes(files):
    files = files or sorted(glob.glob(".github/workflows/*.yml") + glob.glob(".github/workflows/*.yaml"))
    if not files:
        print("no workflow files found", file=sys.stderr)
        return 1
    findings = [f for p in files for f in pipe_findings(p)]
    for f in findings:
        print(f)
    if findings:
        return 1
    print(f"pipes: every piped run block in {len(files)} workflow file(s) runs with pipefail")
    return 0


def cmd_step(path, job_id, name, subs):
    with open(path) as f:
        wf = yaml.safe_load(f)
    job = (wf.get("jobs") or {}).get(job_id)
    if job is None:
        print(f"{path}: no job {job_id!r}", file=sys.stderr)
        return 1
    steps = [s for s in job.get("steps") or [] if s.get("name") == name and "run" in s]
    if len(steps) != 1:
        print(f"{path}: job {job_id}: {len(steps)} run steps named {name!r}", file=sys.stderr)
        return 1
    script = steps[0]["run"]
    for kv in subs:
        key, _, value = kv.partition("=")
        script = script.replace("${{ matrix.%s }}" % key, value)
    if "${{" in script:
        print(f"{path}: job {job_id}, step {name!r}: unreplaced expression in:\n{script}", file=sys.stderr)
        return 1
    sys.stdout.write(script)
    return 0


SELF_TEST = {
    # name: (workflow, expected number of findings)
    "pipe without shell": ("jobs:\n  a:\n    steps:\n      - run: cmd | grep x\n", 1),
    "pipe in a block": ("jobs:\n  a:\n    steps:\n      - name: n\n        run: |\n          for f in *; do\n            cmd \"$f\" | grep -E '^x'\n          done\n", 1),
    "pipe with step shell": ("jobs:\n  a:\n    steps:\n      - run: cmd | grep x\n        shell: bash\n", 0),
    "pipe with job default": ("jobs:\n  a:\n    defaults:\n      run:\n        shell: bash\n    steps:\n      - run: cmd | grep x\n", 0),
    "pipe with workflow default": ("defaults:\n  run:\n    shell: bash\njobs:\n  a:\n    steps:\n      - run: cmd | grep x\n", 0),
    "custom shell without pipefail": ("jobs:\n  a:\n    steps:\n      - run: cmd | grep x\n        shell: bash -e {0}\n", 1),
    "or is not a pipe": ("jobs:\n  a:\n    steps:\n      - run: cmd || true\n", 0),
    "quoted bar is not a pipe": ("jobs:\n  a:\n    steps:\n      - run: grep -E '^(a|b)' f && echo \"x|y\"\n", 0),
    "commented bar is not a pipe": ("jobs:\n  a:\n    steps:\n      - run: |\n          cmd # a | b\n", 0),
    "pipe in a substitution": ("jobs:\n  a:\n    steps:\n      - run: x=$(cmd | wc -l)\n", 1),
}


def cmd_self_test():
    import os
    import tempfile

    bad = 0
    with tempfile.TemporaryDirectory() as d:
        for name, (text, want) in SELF_TEST.items():
            p = os.path.join(d, "wf.yml")
            with open(p, "w") as f:
                f.write(text)
            got = len(pipe_findings(p))
            ok = got == want
            bad += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name}: {got} finding(s), want {want}")
    return 1 if bad else 0


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "pipes":
        return cmd_pipes(rest)
    if cmd == "step" and len(rest) >= 3:
        return cmd_step(rest[0], rest[1], rest[2], rest[3:])
    if cmd == "self-test" and not rest:
        return cmd_self_test()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
