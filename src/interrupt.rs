//! Ctrl-C, SIGTERM and a hang-up (a dropped ssh session) during a deploy,
//! a rollback or a pin: counted, never fatal on the spot. The running
//! step's process is stopped ([`crate::process`] watches the count) and
//! the plan treats it as a failed step, so the plan is undone; a second
//! one during the undo stops there, and the journal is left for the next
//! command ([`crate::operations::plan`]).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};

use crate::error::Error;

static COUNT: AtomicUsize = AtomicUsize::new(0);
static LAST: AtomicI32 = AtomicI32::new(0);
static ARMED: AtomicBool = AtomicBool::new(false);

extern "C" fn note(signal: std::ffi::c_int) {
    // Async-signal-safe: two atomic stores.
    LAST.store(signal, Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
}

/// From now on SIGINT, SIGTERM and SIGHUP are counted instead of ending
/// djshim.
pub fn catch() -> Result<(), Error> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(note),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to atomics, which is
        // async-signal-safe; no other handler is replaced.
        #[allow(unsafe_code)]
        unsafe { sigaction(signal, &action) }
            .map_err(|e| Error::problem(format!("cannot catch {signal}: {e}")))?;
    }
    ARMED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`catch`] was called.
pub fn armed() -> bool {
    ARMED.load(Ordering::SeqCst)
}

/// How many of those signals came so far.
pub fn count() -> usize {
    COUNT.load(Ordering::SeqCst)
}

/// The name of the last one (`SIGINT`…).
pub fn last() -> &'static str {
    use nix::sys::signal::Signal;
    match Signal::try_from(LAST.load(Ordering::SeqCst)) {
        Ok(Signal::SIGINT) => "SIGINT (Ctrl-C)",
        Ok(Signal::SIGTERM) => "SIGTERM",
        Ok(Signal::SIGHUP) => "SIGHUP (the terminal went away)",
        _ => "a signal",
    }
}

/// The error of a step stopped by one of them.
pub fn interrupted() -> Error {
    Error::problem(format!("interrupted by {}", last()))
}
