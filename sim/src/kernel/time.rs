//! Time, all of it derived from the instruction clock: the simulated CPU runs at
//! [`INSNS_PER_SEC`] (100 MIPS, 10 ns per instruction), so every run sees the same times.
//! When every thread sleeps, the kernel jumps the clock to the earliest deadline (it never
//! spins). `CLOCK_REALTIME` starts at [`REALTIME_BASE`]; the other clocks start at 0.

/// Instructions per simulated second.
pub const INSNS_PER_SEC: u64 = 100_000_000;
/// Nanoseconds per instruction.
pub const NS_PER_INSN: u64 = 1_000_000_000 / INSNS_PER_SEC;
/// `CLOCK_REALTIME` at instruction 0: 2026-01-01T00:00:00Z, in seconds.
pub const REALTIME_BASE: u64 = 1_767_225_600;
/// `CLOCK_REALTIME`.
pub const CLOCK_REALTIME: u64 = 0;

/// Kernel time in nanoseconds after `instructions` instructions and `idle_ns` of sleep.
pub fn now_ns(instructions: u64, idle_ns: u64) -> u64 {
    instructions
        .saturating_mul(NS_PER_INSN)
        .saturating_add(idle_ns)
}

/// The value of clock `clock` at kernel time `ns`, in nanoseconds.
pub fn clock_ns(clock: u64, ns: u64) -> u64 {
    match clock {
        CLOCK_REALTIME | 5 | 8 | 11 => ns.saturating_add(REALTIME_BASE * 1_000_000_000),
        _ => ns,
    }
}

/// A `struct timespec` (two little-endian 64-bit words) for `ns`.
pub fn timespec(ns: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(ns / 1_000_000_000).to_le_bytes());
    out[8..].copy_from_slice(&(ns % 1_000_000_000).to_le_bytes());
    out
}

/// Nanoseconds in a `struct timespec`, or `None` if it is invalid.
pub fn from_timespec(bytes: [u8; 16]) -> Option<u64> {
    let sec = i64::from_le_bytes(bytes[..8].try_into().ok()?);
    let nsec = i64::from_le_bytes(bytes[8..].try_into().ok()?);
    if sec < 0 || !(0..1_000_000_000).contains(&nsec) {
        return None;
    }
    Some(
        (sec as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(nsec as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_follow_instructions() {
        assert_eq!(now_ns(100, 5), 1005);
        assert_eq!(clock_ns(1, 7), 7, "monotonic");
        assert_eq!(clock_ns(CLOCK_REALTIME, 0) / 1_000_000_000, REALTIME_BASE);
        let ts = timespec(3_000_000_042);
        assert_eq!(from_timespec(ts), Some(3_000_000_042));
        let mut bad = ts;
        bad[8..].copy_from_slice(&2_000_000_000u64.to_le_bytes());
        assert_eq!(from_timespec(bad), None);
    }
}
