//! Signals, as far as the simulator has them: actions are recorded (`rt_sigaction`), masks
//! and alternate stacks too (per thread), and a signal sent to a process takes its default
//! action at once. Handlers are never run (the simulator builds no signal frames): a
//! signal whose action is a handler also takes the default action, with a diagnostic.
//! That is enough for `abort()` (SIGABRT, exit status 134) and `raise`.

/// Number of signals (1..=64).
pub const NSIG: usize = 64;
/// `SIG_IGN`.
const SIG_IGN: u64 = 1;
/// SIGABRT.
pub const SIGABRT: i32 = 6;
/// SIGKILL.
pub const SIGKILL: i32 = 9;

/// One recorded `struct sigaction` (riscv64: handler, flags, mask; no restorer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SigAction {
    /// `sa_handler` (0: default, 1: ignore).
    pub handler: u64,
    /// `sa_flags`.
    pub flags: u64,
    /// `sa_mask`.
    pub mask: u64,
}

impl SigAction {
    /// The action as the kernel's `struct sigaction` bytes.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[..8].copy_from_slice(&self.handler.to_le_bytes());
        out[8..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..].copy_from_slice(&self.mask.to_le_bytes());
        out
    }

    /// The action from the kernel's `struct sigaction` bytes.
    pub fn from_bytes(b: [u8; 24]) -> Self {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        SigAction {
            handler: word(0),
            flags: word(1),
            mask: word(2),
        }
    }
}

/// A process's signal actions.
#[derive(Clone, Debug)]
pub struct SignalActions {
    actions: [SigAction; NSIG],
}

impl Default for SignalActions {
    fn default() -> Self {
        SignalActions {
            actions: [SigAction::default(); NSIG],
        }
    }
}

/// What a signal sent to a process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Nothing (ignored, by action or by default).
    Ignore,
    /// The process ends, killed by the signal.
    Kill,
    /// A handler is installed, which the simulator cannot run: the process ends too.
    HandlerNotRun,
}

impl SignalActions {
    /// The action of `signal` (1..=64).
    pub fn get(&self, signal: usize) -> Option<SigAction> {
        self.actions.get(signal.checked_sub(1)?).copied()
    }

    /// Records a new action; SIGKILL and SIGSTOP cannot be changed.
    pub fn set(&mut self, signal: usize, action: SigAction) -> bool {
        if signal == SIGKILL as usize || signal == 19 {
            return false;
        }
        match signal.checked_sub(1).and_then(|i| self.actions.get_mut(i)) {
            Some(slot) => {
                *slot = action;
                true
            }
            None => false,
        }
    }

    /// After `execve`: handlers go back to the default (ignored signals stay ignored).
    pub fn reset_handlers(&mut self) {
        for a in &mut self.actions {
            if a.handler != SIG_IGN {
                *a = SigAction::default();
            }
        }
    }

    /// What sending `signal` does.
    pub fn disposition(&self, signal: usize) -> Disposition {
        let handler = self.get(signal).map_or(0, |a| a.handler);
        // SIGCHLD, SIGCONT, SIGURG and SIGWINCH are ignored by default; so, here, are the
        // stop signals (nothing in the simulator continues a stopped process).
        let ignored_by_default = matches!(signal, 17 | 18 | 19 | 20 | 21 | 22 | 23 | 28);
        match handler {
            SIG_IGN => Disposition::Ignore,
            0 if ignored_by_default => Disposition::Ignore,
            0 => Disposition::Kill,
            _ if signal == SIGKILL as usize => Disposition::Kill,
            _ => Disposition::HandlerNotRun,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_decide_what_a_signal_does() {
        let mut s = SignalActions::default();
        assert_eq!(s.disposition(SIGABRT as usize), Disposition::Kill);
        assert_eq!(s.disposition(17), Disposition::Ignore);
        let ignore = SigAction {
            handler: 1,
            ..SigAction::default()
        };
        assert!(s.set(13, ignore));
        assert_eq!(s.disposition(13), Disposition::Ignore);
        assert!(!s.set(SIGKILL as usize, ignore));
        let handler = SigAction {
            handler: 0x1234,
            flags: 4,
            mask: 1,
        };
        assert!(s.set(11, handler));
        assert_eq!(SigAction::from_bytes(handler.to_bytes()), handler);
        assert_eq!(s.disposition(11), Disposition::HandlerNotRun);
        s.reset_handlers();
        assert_eq!(s.disposition(11), Disposition::Kill);
        assert_eq!(s.disposition(13), Disposition::Ignore);
        assert_eq!(s.get(0), None);
    }
}
