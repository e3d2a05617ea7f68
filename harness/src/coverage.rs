//! The fault-path coverage gate (`sweep --coverage scenarios/coverage/ci.toml`): which of the
//! server's markers (`spiral_server::coverage::CATALOG`) a sweep's runs reached, and whether every
//! marker the file requires was reached by at least one run. A sweep that passes its checkers but
//! misses a required marker exits [`EXIT_COVERAGE`]: it no longer exercises that failure path.
//!
//! The file lists every catalogued marker exactly once — `required`, or under `not_required`
//! with the reason the CI seed range cannot reach it — so a marker added to the server without
//! a decision here is an error, not a silent gap.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use spiral_server::coverage::CATALOG;

/// A sweep passed its checkers but missed a marker the coverage file requires.
pub const EXIT_COVERAGE: u8 = 4;

/// `scenarios/coverage/ci.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoverageFile {
    /// Markers the sweep must reach.
    pub required: Vec<String>,
    /// Markers it need not reach, each with the reason.
    #[serde(default)]
    pub not_required: BTreeMap<String, String>,
}

impl CoverageFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let f: CoverageFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        f.validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(f)
    }

    /// Every catalogued marker decided exactly once; nothing uncatalogued.
    fn validate(&self) -> Result<(), String> {
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        let listed = self
            .required
            .iter()
            .map(|m| (m.as_str(), "required"))
            .chain(
                self.not_required
                    .keys()
                    .map(|m| (m.as_str(), "not_required")),
            );
        for (m, list) in listed {
            if !CATALOG.iter().any(|(c, _)| *c == m) {
                return Err(format!("{list}: `{m}` is not a marker of the server"));
            }
            if let Some(other) = seen.insert(m, list) {
                return Err(format!("`{m}` is listed twice ({other} and {list})"));
            }
        }
        let undecided: Vec<&str> = CATALOG
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| !seen.contains_key(m))
            .collect();
        if !undecided.is_empty() {
            return Err(format!(
                "markers neither required nor excused (add them to `required` or, with a reason, to `not_required`): {}",
                undecided.join(", ")
            ));
        }
        Ok(())
    }
}

/// What a sweep reached: for every catalogued marker, how many runs reached it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    /// Runs that reached each marker (every catalogued marker, 0 included).
    pub runs: BTreeMap<String, u64>,
    /// The required markers no run reached (with `--coverage`).
    pub missed: Vec<String>,
    /// Whether a coverage file was applied.
    pub gated: bool,
}

impl Coverage {
    /// Count runs per marker from each run's reached markers.
    pub fn of<'a>(runs: impl IntoIterator<Item = &'a BTreeMap<String, u64>>) -> Self {
        let mut counts: BTreeMap<String, u64> =
            CATALOG.iter().map(|(m, _)| ((*m).to_owned(), 0)).collect();
        for reached in runs {
            for m in reached.keys() {
                *counts.entry(m.clone()).or_default() += 1;
            }
        }
        Coverage {
            runs: counts,
            missed: Vec::new(),
            gated: false,
        }
    }

    /// Apply `file`: the required markers no run reached.
    pub fn gate(&mut self, file: &CoverageFile) {
        self.gated = true;
        self.missed = file
            .required
            .iter()
            .filter(|m| self.runs.get(*m).copied().unwrap_or(0) == 0)
            .cloned()
            .collect();
    }

    /// The per-marker table (with `--coverage`), or one line.
    pub fn table(&self, total_runs: usize) -> String {
        let reached = self.runs.values().filter(|n| **n > 0).count();
        let mut out = format!(
            "coverage: {reached} of {} markers reached by {total_runs} runs",
            self.runs.len()
        );
        if self.gated {
            out.push('\n');
            for (m, n) in &self.runs {
                let what = CATALOG.iter().find(|(c, _)| c == m).map_or("", |(_, d)| *d);
                let flag = if self.missed.contains(m) {
                    "MISSED"
                } else {
                    ""
                };
                out.push_str(&format!("  {m:<26} {n:>6}  {flag:<6} {what}\n"));
            }
            if self.missed.is_empty() {
                out.push_str("coverage gate: every required marker reached");
            } else {
                out.push_str(&format!(
                    "coverage gate: FAILED, required markers never reached: {}",
                    self.missed.join(", ")
                ));
            }
        } else {
            let none: Vec<&str> = self
                .runs
                .iter()
                .filter(|(_, n)| **n == 0)
                .map(|(m, _)| m.as_str())
                .collect();
            if !none.is_empty() {
                out.push_str(&format!("; not reached: {}", none.join(" ")));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(required: &[&str], excused: &[&str]) -> CoverageFile {
        CoverageFile {
            required: required.iter().map(|s| (*s).to_owned()).collect(),
            not_required: excused
                .iter()
                .map(|s| ((*s).to_owned(), "because".to_owned()))
                .collect(),
        }
    }

    fn all_but(n: usize) -> Vec<&'static str> {
        CATALOG.iter().skip(n).map(|(m, _)| *m).collect()
    }

    #[test]
    fn every_marker_must_be_decided_once_and_exist() {
        let (first, rest) = (CATALOG[0].0, all_but(1));
        file(&rest, &[first]).validate().unwrap();
        let e = file(&rest, &[]).validate().unwrap_err();
        assert!(e.contains(first), "{e}");
        let mut twice = rest.clone();
        twice.push(rest[0]);
        assert!(
            file(&twice, &[first])
                .validate()
                .unwrap_err()
                .contains("twice")
        );
        let mut bogus = rest.clone();
        bogus.push("no.such.marker");
        assert!(
            file(&bogus, &[first])
                .validate()
                .unwrap_err()
                .contains("not a marker")
        );
    }

    #[test]
    fn the_gate_names_required_markers_no_run_reached() {
        let (a, b) = (CATALOG[0].0, CATALOG[1].0);
        let runs = [
            BTreeMap::from([(a.to_owned(), 3)]),
            BTreeMap::from([(a.to_owned(), 1)]),
        ];
        let mut c = Coverage::of(&runs);
        assert_eq!(c.runs[a], 2, "runs, not hits");
        assert_eq!(c.runs[b], 0);
        c.gate(&file(&[a, b], &[]));
        assert_eq!(c.missed, vec![b.to_owned()]);
        assert!(c.table(2).contains(&format!("never reached: {b}")));
        c.gate(&file(&[a], &[b]));
        assert!(c.missed.is_empty());
    }
}
