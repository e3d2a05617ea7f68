//! Panics on a run's thread. A task that panics inside a simulated host ends quietly — its
//! runtime catches the panic and the connection it served just drops, which the checkers may
//! well take for a lost packet — but the server must never panic (SPEC: bad input gets a clear
//! error). So while a run is simulated, the first panic on its thread is kept, whoever caught
//! it, and the run is reported as a crash naming it.
//!
//! The hook is process-wide (installed once, the earlier hook kept for every other thread);
//! what it keeps is per thread, and every host of a run runs on the thread that runs it.

use std::cell::RefCell;
use std::panic::PanicHookInfo;
use std::sync::Once;

thread_local! {
    /// `None`: this thread runs no watched run. `Some(None)`: watched, nothing panicked yet.
    static CAUGHT: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Run `f`, keeping the first panic on this thread while it runs (message and place).
pub(crate) fn watch<T>(f: impl FnOnce() -> T) -> (T, Option<String>) {
    install();
    CAUGHT.with(|c| *c.borrow_mut() = Some(None));
    let out = f();
    let caught = CAUGHT.with(|c| c.borrow_mut().take().flatten());
    (out, caught)
}

fn install() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let earlier = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let kept = CAUGHT.with(|c| {
                let Ok(mut c) = c.try_borrow_mut() else {
                    return false;
                };
                let Some(slot) = c.as_mut() else {
                    return false;
                };
                slot.get_or_insert_with(|| describe(info));
                true
            });
            if !kept {
                earlier(info);
            }
        }));
    });
}

/// What a panic said: its payload's text (`panic!` gives a `&str` or a `String`).
pub(crate) fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let msg = message(info.payload());
    match info.location() {
        Some(at) => format!("{msg} (at {}:{})", at.file(), at.line()),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::watch;

    #[test]
    fn a_panic_caught_inside_the_run_is_still_reported() {
        let ((), caught) = watch(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                // As a connection task of a simulated host: its runtime catches the panic.
                let task = tokio::spawn(async { panic!("a handler broke") });
                assert!(task.await.unwrap_err().is_panic());
            });
        });
        let caught = caught.expect("the task's panic is kept");
        assert!(caught.starts_with("a handler broke (at "), "{caught}");
        assert!(caught.contains("panics.rs"), "{caught}");
    }

    #[test]
    fn a_run_without_panics_reports_none_and_later_panics_are_not_kept() {
        let ((), caught) = watch(|| ());
        assert_eq!(caught, None);
        // Outside a watched run the thread's panics are nobody's business here.
        let r = std::panic::catch_unwind(|| panic!("not watched"));
        assert!(r.is_err());
        let ((), caught) = watch(|| ());
        assert_eq!(caught, None);
    }
}
