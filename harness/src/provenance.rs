//! Where a run came from: the checkout's commit, the harness version, the planted bug, the
//! scenario file's digest. Every trace file starts with a [`TraceHeader`] built from these, and
//! every replay command pins the commit and the scenario digest, so a red line from last week
//! refuses to replay something else today instead of silently doing so.

use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Version of a trace: its header and its records. Bump it when a field changes meaning or
/// disappears (adding a field is compatible). 2: the records are the typed history of
/// `spiral-history` (`op` with a typed operation and answer, `phase` records).
pub const SCHEMA_VERSION: u32 = 2;

/// The harness crate's version.
pub const HARNESS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The checkout a run happened in (`git` at run time, from the working directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkout {
    /// The full commit id, or `unknown` outside a git checkout.
    pub commit: String,
    /// Tracked files differ from the commit: a replay elsewhere may differ.
    pub dirty: bool,
}

impl Checkout {
    /// The current checkout, asked once per process.
    pub fn current() -> &'static Checkout {
        static CURRENT: OnceLock<Checkout> = OnceLock::new();
        CURRENT.get_or_init(|| {
            let git = |args: &[&str]| {
                std::process::Command::new("git")
                    .args(args)
                    .stderr(std::process::Stdio::null())
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            };
            match git(&["rev-parse", "HEAD"]) {
                Some(commit) => Checkout {
                    commit,
                    dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                        .is_some_and(|s| !s.is_empty()),
                },
                None => Checkout {
                    commit: "unknown".into(),
                    dirty: false,
                },
            }
        })
    }

    /// The first 12 characters of the commit, as replay commands carry it.
    pub fn short(&self) -> &str {
        &self.commit[..self.commit.len().min(12)]
    }

    pub fn known(&self) -> bool {
        self.commit != "unknown"
    }
}

/// The bug planted in this process (`SPIRAL_PLANTED_BUG` in a `planted-bugs` build), if any.
pub fn planted_bug() -> Option<String> {
    #[cfg(feature = "planted-bugs")]
    {
        spiral_server::planted::current().map(|b| b.name().to_owned())
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        None
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A scenario file as it was run: its path as given and the digest of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScenarioFile {
    pub file: String,
    pub sha256: String,
}

impl ScenarioFile {
    pub fn read(path: &Path) -> Result<(Self, String), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Ok((
            ScenarioFile {
                file: path.display().to_string(),
                sha256: sha256_hex(text.as_bytes()),
            },
            text,
        ))
    }

    /// The digest's first 16 hex characters, as replay commands carry it.
    pub fn short_digest(&self) -> &str {
        &self.sha256[..16.min(self.sha256.len())]
    }
}

/// The first line of every trace file.
#[derive(Debug, Clone, Serialize)]
pub struct TraceHeader<'a> {
    /// Always `spiral-harness/trace`.
    pub trace: &'static str,
    pub schema_version: u32,
    pub harness_version: &'static str,
    pub commit: &'a str,
    pub dirty: bool,
    pub planted_bug: Option<String>,
    pub scenario: &'a str,
    pub file: &'a str,
    pub sha256: &'a str,
    pub seed: u64,
}

impl<'a> TraceHeader<'a> {
    pub fn new(scenario: &'a str, file: &'a ScenarioFile, seed: u64) -> Self {
        let co = Checkout::current();
        TraceHeader {
            trace: "spiral-harness/trace",
            schema_version: SCHEMA_VERSION,
            harness_version: HARNESS_VERSION,
            commit: &co.commit,
            dirty: co.dirty,
            planted_bug: planted_bug(),
            scenario,
            file: &file.file,
            sha256: &file.sha256,
            seed,
        }
    }

    /// The header line and then the run's trace lines, newline-terminated: a trace file.
    pub fn file_text(&self, lines: &[String]) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        for l in lines {
            text.push_str(l);
            text.push('\n');
        }
        text
    }
}

/// The exact command that replays one seed of a scenario file, pinned to the commit and the
/// scenario digest it was recorded with (`sim` refuses to run when either differs).
pub fn replay_command(file: &ScenarioFile, seed: u64) -> String {
    let co = Checkout::current();
    let pins = if co.known() {
        format!(
            " --commit {} --scenario-sha256 {}",
            co.short(),
            file.short_digest()
        )
    } else {
        format!(" --scenario-sha256 {}", file.short_digest())
    };
    format!(
        "{}sim {} --seed {seed}{pins}",
        cargo_prefix(),
        shell_quote(&file.file)
    )
}

/// `cargo run …  --` for this build: with the planted bug and its feature when one is planted.
pub fn cargo_prefix() -> String {
    match planted_bug() {
        Some(bug) => format!(
            "SPIRAL_PLANTED_BUG={bug} cargo run --release -p spiral-harness --features planted-bugs -- "
        ),
        None => "cargo run --release -p spiral-harness -- ".into(),
    }
}

/// Quote `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Why a pinned replay must not run here, if it must not: the commit or the scenario differs.
pub fn check_pins(
    commit: Option<&str>,
    scenario_sha256: Option<&str>,
    file: Option<&ScenarioFile>,
) -> Result<(), String> {
    if let Some(want) = commit {
        let co = Checkout::current();
        if !co.known() {
            return Err(format!(
                "this replay was recorded at commit {want}, and this is not a git checkout: \
                 run it in a clone of the repository, or drop --commit"
            ));
        }
        if want.len() < 7 || !co.commit.starts_with(want) {
            return Err(format!(
                "this replay was recorded at commit {want}; HEAD is {}: run `git checkout {want}` first \
                 (or drop --commit to run today's code)",
                co.short()
            ));
        }
    }
    if let (Some(want), Some(file)) = (scenario_sha256, file)
        && (want.len() < 8 || !file.sha256.starts_with(want))
    {
        return Err(format!(
            "{} has sha256 {}, not the recorded {want}: the scenario changed since this replay was \
             printed (the sweep's artifacts keep a copy of the file as it ran)",
            file.file,
            file.short_digest()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn shell_quote_leaves_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("scenarios/smoke.toml"), "scenarios/smoke.toml");
        assert_eq!(shell_quote("my dir/a'b.toml"), r"'my dir/a'\''b.toml'");
    }

    #[test]
    fn a_changed_scenario_refuses_its_old_replay() {
        let f = ScenarioFile {
            file: "s.toml".into(),
            sha256: sha256_hex(b"name = \"x\""),
        };
        assert!(check_pins(None, Some(&f.sha256[..16]), Some(&f)).is_ok());
        let err = check_pins(None, Some("0123456789abcdef"), Some(&f)).unwrap_err();
        assert!(err.contains("not the recorded 0123456789abcdef"), "{err}");
        assert!(
            check_pins(None, Some("abc"), Some(&f)).is_err(),
            "too short a pin"
        );
    }

    #[test]
    fn the_trace_file_starts_with_its_header() {
        let f = ScenarioFile {
            file: "scenarios/smoke.toml".into(),
            sha256: "ab".repeat(32),
        };
        let text = TraceHeader::new("smoke", &f, 42).file_text(&["{\"t_ms\":0}".into()]);
        let mut lines = text.lines();
        let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(header["trace"], "spiral-harness/trace");
        assert_eq!(header["schema_version"], SCHEMA_VERSION);
        assert_eq!(header["seed"], 42);
        assert_eq!(header["scenario"], "smoke");
        assert_eq!(header["sha256"], "ab".repeat(32));
        assert!(header["commit"].as_str().is_some_and(|c| !c.is_empty()));
        assert_eq!(lines.next(), Some("{\"t_ms\":0}"));
        assert_eq!(lines.next(), None);
    }
}
