//! What a failed run found, in one type for every kind of run (the simulated world, the
//! engine-only model, the real-process suite), and the exit code each failure gives (SPEC §3).

use crate::checkers::{Class, Violation};

/// Exit code of a run that passed.
pub const EXIT_PASS: u8 = 0;
/// The server or the simulation panicked or failed.
pub const EXIT_CRASH: u8 = 127;
/// Work did not complete after the faults healed, or an SLO was missed.
pub const EXIT_LIVENESS: u8 = 128;
/// A safety property broke.
pub const EXIT_CORRECTNESS: u8 = 129;

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A safety property broke: which checker and what it saw.
    Correctness {
        checker: &'static str,
        detail: String,
    },
    /// Work did not complete after the faults healed, or an SLO was missed.
    Liveness {
        checker: &'static str,
        detail: String,
    },
    /// The simulation or the server panicked or failed.
    Crash(String),
}

impl Failure {
    /// The failure a checker's violation makes.
    pub fn of(v: Violation) -> Failure {
        match v.class {
            Class::Correctness => Failure::Correctness {
                checker: v.checker,
                detail: v.detail,
            },
            Class::Liveness => Failure::Liveness {
                checker: v.checker,
                detail: v.detail,
            },
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Correctness { .. } => EXIT_CORRECTNESS,
            Failure::Liveness { .. } => EXIT_LIVENESS,
            Failure::Crash(_) => EXIT_CRASH,
        }
    }

    /// `correctness:acked_writes`, `liveness:liveness`, `crash`: what the shrinker keeps.
    pub fn class(&self) -> String {
        match self {
            Failure::Correctness { checker, .. } => format!("correctness:{checker}"),
            Failure::Liveness { checker, .. } => format!("liveness:{checker}"),
            Failure::Crash(_) => "crash".into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Failure::Correctness { checker, detail } => format!("correctness [{checker}] {detail}"),
            Failure::Liveness { checker, detail } => format!("liveness [{checker}] {detail}"),
            Failure::Crash(m) => format!("crash: {m}"),
        }
    }
}

/// The exit code of a run's outcome (`None`: it passed).
pub fn exit_code(failure: Option<&Failure>) -> u8 {
    failure.map_or(EXIT_PASS, Failure::exit_code)
}

/// The class of a run's outcome: `pass`, or the failure's [`Failure::class`].
pub fn class(failure: Option<&Failure>) -> String {
    failure.map_or_else(|| "pass".into(), Failure::class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_exit_codes() {
        let v = |class| Violation {
            checker: "reads",
            class,
            detail: "d".into(),
        };
        let c = Failure::of(v(Class::Correctness));
        assert_eq!(
            (c.exit_code(), c.class()),
            (129, "correctness:reads".into())
        );
        let l = Failure::of(v(Class::Liveness));
        assert_eq!((l.exit_code(), l.class()), (128, "liveness:reads".into()));
        assert_eq!(Failure::Crash("x".into()).exit_code(), 127);
        assert_eq!((exit_code(None), class(None)), (0, "pass".into()));
    }
}
