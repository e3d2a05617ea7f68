//! Pass/fail criteria on load figures, in the style of k6's thresholds: `p95_ms < 5`,
//! `timeout_rate <= 0.001`. Each is judged on every phase the generator measured (an
//! inconclusive phase's figures are the generator's, so they are not judged); a breach makes
//! `load` exit 99 (k6's code for a failed threshold), and `--abort-on-fail` stops at the first.

use crate::load::{PhaseReport, Verdict};

/// The exit code of a load run with a breached threshold (k6's).
pub const EXIT_THRESHOLD: u8 = 99;

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Latency percentiles from the intended send time, timeouts at the timeout (ms).
    P50Ms,
    P95Ms,
    P99Ms,
    MaxMs,
    /// The service time's p95 (ms).
    ServiceP95Ms,
    /// Error envelopes and requests lost with their connection, over the requests scheduled.
    ErrorRate,
    /// Timeouts over the requests scheduled.
    TimeoutRate,
}

impl Metric {
    const ALL: [(&'static str, Metric); 7] = [
        ("p50_ms", Metric::P50Ms),
        ("p95_ms", Metric::P95Ms),
        ("p99_ms", Metric::P99Ms),
        ("max_ms", Metric::MaxMs),
        ("service_p95_ms", Metric::ServiceP95Ms),
        ("error_rate", Metric::ErrorRate),
        ("timeout_rate", Metric::TimeoutRate),
    ];

    fn name(self) -> &'static str {
        Metric::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("?", |(n, _)| n)
    }

    /// The figure in a phase's report.
    pub fn of(self, r: &PhaseReport) -> f64 {
        let ms = |us: u64| us as f64 / 1000.0;
        let rate = |n: u64| n as f64 / r.scheduled.max(1) as f64;
        match self {
            Metric::P50Ms => ms(r.latency.p50_us),
            Metric::P95Ms => ms(r.latency.p95_us),
            Metric::P99Ms => ms(r.latency.p99_us),
            Metric::MaxMs => ms(r.latency.max_us),
            Metric::ServiceP95Ms => ms(r.service.p95_us),
            Metric::ErrorRate => rate(r.errors),
            Metric::TimeoutRate => rate(r.timeouts),
        }
    }
}

/// `METRIC < VALUE` or `METRIC <= VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub metric: Metric,
    /// `<=` when true, `<` when false.
    pub inclusive: bool,
    pub value: f64,
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.inclusive { "<=" } else { "<" };
        write!(f, "{} {op} {}", self.metric.name(), self.value)
    }
}

impl std::str::FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Threshold, String> {
        let (name, inclusive, value) = if let Some((n, v)) = s.split_once("<=") {
            (n, true, v)
        } else if let Some((n, v)) = s.split_once('<') {
            (n, false, v)
        } else {
            return Err(format!(
                "threshold {s:?}: expected METRIC < VALUE or METRIC <= VALUE"
            ));
        };
        let name = name.trim();
        let metric = Metric::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let known: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "threshold {s:?}: unknown metric {name:?} (one of {})",
                    known.join(", ")
                )
            })?;
        let value: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("threshold {s:?}: the value must be a number >= 0"))?;
        Ok(Threshold {
            metric,
            inclusive,
            value,
        })
    }
}

/// One threshold judged on one phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Judged {
    pub threshold: String,
    pub rate_per_s: u64,
    pub value: f64,
    /// `None`: not judged (an inconclusive phase).
    pub ok: Option<bool>,
}

impl Threshold {
    pub fn holds(&self, figure: f64) -> bool {
        if self.inclusive {
            figure <= self.value
        } else {
            figure < self.value
        }
    }

    /// This threshold on a phase.
    pub fn judge(&self, r: &PhaseReport) -> Judged {
        let value = self.metric.of(r);
        Judged {
            threshold: self.to_string(),
            rate_per_s: r.rate_per_s,
            value,
            ok: (r.verdict == Verdict::Measured).then(|| self.holds(value)),
        }
    }
}

/// A table row.
pub fn row(j: &Judged) -> String {
    let verdict = match j.ok {
        Some(true) => "ok",
        Some(false) => "BREACHED",
        None => "not judged (inconclusive phase)",
    };
    format!(
        "  {:<24} {:>8}/s  {:>12.4}  {verdict}",
        j.threshold, j.rate_per_s, j.value
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Percentiles;

    fn report(p95_us: u64, timeouts: u64, verdict: Verdict) -> PhaseReport {
        PhaseReport {
            rate_per_s: 1000,
            scheduled: 1000,
            sent: 1000,
            answered: 1000 - timeouts,
            errors: 0,
            timeouts,
            late: 0,
            lost: 0,
            timeout_us: 2_000_000,
            sent_per_s: 1000.0,
            achieved_per_s: 1000.0,
            latency: Percentiles {
                count: 1000,
                p50_us: 100,
                p95_us,
                p99_us: p95_us,
                max_us: p95_us,
            },
            service: Percentiles::default(),
            lag: Percentiles::default(),
            generator_cpu: 0.1,
            server_cpu_us_per_request: None,
            verdict,
            intervals: Vec::new(),
        }
    }

    #[test]
    fn thresholds_parse_and_refuse_what_they_cannot_judge() {
        let t: Threshold = "p95_ms < 5".parse().unwrap();
        assert_eq!(
            t,
            Threshold {
                metric: Metric::P95Ms,
                inclusive: false,
                value: 5.0
            }
        );
        assert_eq!(t.to_string(), "p95_ms < 5");
        let t: Threshold = "timeout_rate<=0.001".parse().unwrap();
        assert!(t.inclusive && t.metric == Metric::TimeoutRate);
        for bad in [
            "p95 < 5",
            "p95_ms > 5",
            "p95_ms < fast",
            "p95_ms < -1",
            "p95_ms < NaN",
        ] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_breach_is_judged_only_on_a_measured_phase() {
        let t: Threshold = "p95_ms < 5".parse().unwrap();
        assert_eq!(t.judge(&report(4_999, 0, Verdict::Measured)).ok, Some(true));
        assert_eq!(
            t.judge(&report(5_000, 0, Verdict::Measured)).ok,
            Some(false)
        );
        let behind = Verdict::Inconclusive("lag".into());
        assert_eq!(t.judge(&report(9_000, 0, behind)).ok, None);
        let t: Threshold = "timeout_rate <= 0.01".parse().unwrap();
        assert_eq!(t.judge(&report(1, 10, Verdict::Measured)).ok, Some(true));
        let j = t.judge(&report(1, 11, Verdict::Measured));
        assert_eq!(j.ok, Some(false));
        assert!(row(&j).contains("BREACHED"), "{}", row(&j));
    }
}
