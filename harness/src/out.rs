//! Standard output for the command-line tools. A closed stdout (`spiral-harness sim … | head`)
//! ends the program quietly with exit 0: the reader asked for no more, which is not a failure of
//! the run, and a panic with a backtrace would bury the lines it did read.

use std::fmt;
use std::io::Write;

/// Write one line (see [`say!`](crate::say)).
pub fn line(args: fmt::Arguments<'_>) {
    write(args, true);
}

/// Write without a newline.
pub fn text(args: fmt::Arguments<'_>) {
    write(args, false);
}

fn write(args: fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let r = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            out.flush()
        }
    });
    match r {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("cannot write to stdout: {e}");
            std::process::exit(i32::from(crate::EXIT_ERROR));
        }
    }
}

/// `println!` for the tools: a closed stdout ends the program quietly (exit 0).
#[macro_export]
macro_rules! say {
    () => { $crate::out::line(format_args!("")) };
    ($($t:tt)*) => { $crate::out::line(format_args!($($t)*)) };
}

/// `print!` for the tools, with the same rule as [`say!`](crate::say).
#[macro_export]
macro_rules! say_text {
    ($($t:tt)*) => { $crate::out::text(format_args!($($t)*)) };
}
