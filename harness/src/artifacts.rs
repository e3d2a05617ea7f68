//! What a sweep leaves of a failing seed (`sweep --artifacts DIR`), so a red line in CI is one
//! command from the identical run on a developer's machine:
//!
//! ```text
//! DIR/summary.json                 the sweep summary (as --json writes it)
//! DIR/<scenario>/seed-<N>/
//!     trace.jsonl                  the run's trace, header line first
//!     scenario.toml                the scenario file as it ran
//!     minimal.toml                 the shrunk scenario that still fails the same way
//!     verdict.txt                  the verdict, faults fired, the trace lines leading to it
//!     replay.sh                    checks HEAD and the scenario's digest, replays the seed and
//!                                  compares the new trace with trace.jsonl byte for byte
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::provenance::{Checkout, ScenarioFile, TraceHeader, cargo_prefix, shell_quote};
use crate::scenario::Scenario;
use crate::shrink::Shrunk;
use crate::summary::counts;
use crate::world::RunResult;

/// A failing run and what is known about it.
pub struct FailedRun<'a> {
    pub scenario: &'a Scenario,
    pub file: &'a ScenarioFile,
    /// The scenario file's text as it ran.
    pub text: &'a str,
    pub run: &'a RunResult,
    /// The shrinker's result, or why there is none.
    pub shrunk: Result<&'a Shrunk, &'a str>,
}

/// The directory of one failing seed under `root`.
pub fn seed_dir(root: &Path, scenario: &str, seed: u64) -> PathBuf {
    let safe: String = scenario
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    root.join(safe).join(format!("seed-{seed}"))
}

/// Write the artifacts of one failing run; returns its directory.
pub fn write(root: &Path, f: &FailedRun<'_>) -> Result<PathBuf, String> {
    let dir = seed_dir(root, &f.scenario.name, f.run.seed);
    let io = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", dir.display());
    std::fs::create_dir_all(&dir).map_err(|e| io("create", e))?;
    let header = TraceHeader::new(&f.scenario.name, f.file, f.run.seed);
    let put =
        |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|e| io(name, e));
    put("trace.jsonl", &header.file_text(&f.run.trace))?;
    put("scenario.toml", f.text)?;
    put("verdict.txt", &verdict_text(f))?;
    match f.shrunk {
        Ok(s) => put("minimal.toml", &minimal_text(f, s, &dir))?,
        Err(why) => put("minimal.txt", &format!("not shrunk: {why}\n"))?,
    }
    put("replay.sh", &replay_script(f))?;
    set_executable(&dir.join("replay.sh")).map_err(|e| io("chmod replay.sh", e))?;
    Ok(dir)
}

fn verdict_text(f: &FailedRun<'_>) -> String {
    let co = Checkout::current();
    let mut out = String::new();
    let _ = writeln!(out, "FAIL {}", f.run.describe());
    let _ = writeln!(
        out,
        "scenario {} ({}, sha256 {})  seed {}  commit {}{}",
        f.scenario.name,
        f.file.file,
        f.file.sha256,
        f.run.seed,
        co.commit,
        if co.dirty {
            " (uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "faults fired: {}", counts(&f.run.faults_fired));
    let _ = writeln!(out, "trace {:016x}", f.run.digest());
    let _ = writeln!(out, "leading up to it:");
    for l in f.run.leading_lines(20) {
        let _ = writeln!(out, "  {l}");
    }
    out
}

fn minimal_text(f: &FailedRun<'_>, s: &Shrunk, dir: &Path) -> String {
    format!(
        "# Shrunk from {} (sha256 {}) at seed {} in {} runs; still fails: {}\n\
         # Replay: {}sim {} --seed {}\n\n{}",
        f.file.file,
        f.file.short_digest(),
        f.run.seed,
        s.runs,
        s.result.class(),
        cargo_prefix(),
        shell_quote(&dir.join("minimal.toml").display().to_string()),
        f.run.seed,
        s.scenario.to_toml()
    )
}

fn replay_script(f: &FailedRun<'_>) -> String {
    let co = Checkout::current();
    let seed = f.run.seed;
    let code = f.run.exit_code();
    let file = shell_quote(&f.file.file);
    let pins = if co.known() {
        format!(
            "--commit {} --scenario-sha256 {}",
            co.short(),
            f.file.short_digest()
        )
    } else {
        format!("--scenario-sha256 {}", f.file.short_digest())
    };
    let dirty_note = if co.dirty {
        "echo \"note: the sweep ran with uncommitted changes; the replay may differ\" >&2\n"
    } else {
        ""
    };
    format!(
        r#"#!/usr/bin/env bash
# Replays seed {seed} of scenario "{name}" as a sweep recorded it ({verdict}), then compares the
# new trace with trace.jsonl beside this script, byte for byte. Run it from inside a clone of the
# repository; it checks out nothing: it refuses to run when HEAD or the scenario file differ.
# Exit 0: the failure reproduced with the identical trace.
set -euo pipefail
here=$(cd "$(dirname "${{BASH_SOURCE[0]}}")" && pwd)
commit={commit}
file={file}
sha256={sha256}
top=$(git rev-parse --show-toplevel 2>/dev/null) || {{
  echo "run replay.sh from inside a clone of the repository (at commit $commit)" >&2
  exit 2
}}
cd "$top"
if [ "$commit" != unknown ] && [ "$(git rev-parse HEAD)" != "$commit" ]; then
  echo "recorded at commit $commit; HEAD is $(git rev-parse HEAD): git checkout $commit first" >&2
  exit 2
fi
actual=$(sha256sum "$file")
if [ "${{actual%% *}}" != "$sha256" ]; then
  echo "$file has changed since the recording (sha256 ${{actual%% *}}, recorded $sha256);" >&2
  echo "the file as it ran is $here/scenario.toml" >&2
  exit 2
fi
{dirty_note}out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
set +e
{prefix}sim "$file" --seed {seed} {pins} --trace "$out/trace.jsonl"
rc=$?
set -e
if ! cmp -s "$out/trace.jsonl" "$here/trace.jsonl"; then
  echo "replay: the trace differs from the recorded one:" >&2
  cmp "$out/trace.jsonl" "$here/trace.jsonl" >&2 || true
  exit 1
fi
if [ "$rc" -ne {code} ]; then
  echo "replay: identical trace but exit $rc (recorded {code})" >&2
  exit 1
fi
echo "replay: identical trace ($(wc -l <"$here/trace.jsonl") lines), exit $rc as recorded"
"#,
        name = f.scenario.name,
        verdict = f.run.class(),
        commit = co.commit,
        sha256 = f.file.sha256,
        prefix = cargo_prefix(),
    )
}

#[cfg(unix)]
fn set_executable(p: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn seed_dirs_are_safe_names() {
        let d = super::seed_dir(std::path::Path::new("out"), "gc/pressure x", 17);
        assert_eq!(d, std::path::Path::new("out/gc_pressure_x/seed-17"));
    }
}
