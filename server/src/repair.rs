//! `spiral repair [--verbose]`: rebuild the spiral statistics against the configured storage and
//! report what was scanned, how fast, and every spiral whose statistics were corrected.

use std::fmt::Write as _;

use crate::engine::{RebuildReport, SpiralStats};

/// Render a rebuild report for a terminal. `verbose` adds every spiral's statistics after the
/// rebuild, corrected or not.
pub fn render(
    storage: &str,
    report: &RebuildReport,
    after: &[SpiralStats],
    verbose: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "spiral repair: storage {storage}");
    let _ = writeln!(
        out,
        "scanned {} nodes in {:.1} ms ({:.0} nodes/s)",
        report.scanned, report.elapsed_ms, report.nodes_per_s
    );
    let _ = writeln!(
        out,
        "totalMemories {} -> {}",
        report.total_before, report.total_after
    );
    if report.corrections.is_empty() {
        let _ = writeln!(out, "no corrections: the statistics matched storage");
    } else {
        let _ = writeln!(out, "corrected {} spiral(s):", report.corrections.len());
        for c in &report.corrections {
            let (b, a) = (&c.before, &c.after);
            let _ = writeln!(
                out,
                "  {}: node_count {} -> {}, avg_depth {:.6} -> {:.6}, radius {:.4} -> {:.4}, turns {:.4} -> {:.4}",
                a.id,
                b.node_count,
                a.node_count,
                b.avg_depth,
                a.avg_depth,
                b.radius,
                a.radius,
                b.turns,
                a.turns
            );
        }
    }
    if verbose {
        let _ = writeln!(out, "spirals after the rebuild ({}):", after.len());
        for s in after {
            let _ = writeln!(
                out,
                "  {}: node_count {}, avg_depth {:.6}, radius {:.4}, turns {:.4}",
                s.id, s.node_count, s.avg_depth, s.radius, s.turns
            );
        }
    }
    out
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use super::*;
    use crate::engine::Correction;

    fn stats(id: &str, n: u64) -> SpiralStats {
        SpiralStats {
            id: id.into(),
            node_count: n,
            avg_depth: 0.5,
            radius: 1.0,
            turns: 2.0,
        }
    }

    #[test]
    fn report_names_each_corrected_spiral_with_before_and_after() {
        let report = RebuildReport {
            scanned: 3,
            elapsed_ms: 1.5,
            nodes_per_s: 2000.0,
            total_before: 4,
            total_after: 3,
            corrections: vec![Correction {
                before: stats("s07", 2),
                after: stats("s07", 1),
            }],
        };
        let text = render("memory", &report, &[stats("s07", 1)], true);
        assert!(
            text.contains("scanned 3 nodes in 1.5 ms (2000 nodes/s)"),
            "{text}"
        );
        assert!(text.contains("s07: node_count 2 -> 1"), "{text}");
        assert!(text.contains("totalMemories 4 -> 3"), "{text}");
        assert!(text.contains("spirals after the rebuild (1)"), "{text}");
    }
}
