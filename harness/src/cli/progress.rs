//! The progress bar a sweep draws on stderr while its seeds run, when stderr is a terminal.

use std::sync::atomic::AtomicUsize;

/// A progress bar on stderr when it is a terminal.
pub struct Progress {
    tty: bool,
    total: usize,
    done: AtomicUsize,
    failed: AtomicUsize,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
            total,
            done: 0.into(),
            failed: 0.into(),
        }
    }

    pub fn tick(&self, name: &str, failed: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let d = self.done.fetch_add(1, Relaxed) + 1;
        if failed {
            self.failed.fetch_add(1, Relaxed);
        }
        if self.tty {
            let width = 30;
            let fill = d * width / self.total.max(1);
            eprint!(
                "\r{name:<22} [{}{}] {d}/{} failed {}",
                "#".repeat(fill),
                " ".repeat(width - fill),
                self.total,
                self.failed.load(Relaxed)
            );
        }
    }

    pub fn clear(&self) {
        if self.tty {
            eprint!("\r{:<70}\r", "");
        }
    }
}
