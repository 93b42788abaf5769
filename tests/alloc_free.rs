//! No heap allocation per hit in steady state (DESIGN §3.5): a counting global allocator
//! watches N hits of each class after a warm-up, through the public trap API, at one site per
//! class and spread over 1 000 probes (emulated; out of line).
//!
//! The count is per thread, so tests running on other threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

#[path = "../benches/support/hits.rs"]
#[allow(dead_code)]
mod hits;

use hits::{Hits, Many, Site};

/// The system allocator, counting the allocations made by each thread.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: the thread-local may already be gone while the thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc
// contract; counting touches only a const-initialised thread-local (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's layout contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Hits per class measured after the warm-up.
const HITS: usize = 1_000;

#[test]
fn the_counter_sees_allocations() {
    let before = allocations();
    let v: Vec<u64> = std::hint::black_box(vec![1, 2, 3]);
    assert!(allocations() > before, "allocating {v:?} was not counted");
}

#[test]
fn hits_of_every_class_allocate_nothing_after_warm_up() {
    let mut hits = Hits::new().expect("arming the probes");
    for site in Site::ALL {
        // Warm-up: the first hits of a thread create its per-thread state.
        for _ in 0..3 {
            assert!(hits.hit(site), "{} warm-up hit not handled", site.name());
        }
        let before = allocations();
        for i in 0..HITS {
            assert!(hits.hit(site), "{} hit {i} not handled", site.name());
        }
        let made = allocations() - before;
        assert_eq!(
            made,
            0,
            "{}: {made} allocations in {HITS} hits",
            site.name()
        );
    }
    // The probes really ran: each counted its hits (and the return probe its returns).
    let runs = HITS as u64 + 3;
    for site in [Site::Simulate, Site::Emulate, Site::Xol, Site::Uretprobe] {
        let stats = hits
            .engine
            .stats(hits::PATH, site.addr())
            .expect("probe registered");
        assert_eq!(stats.hits, runs, "{} hits", site.name());
    }
    let uret = hits
        .engine
        .stats(hits::PATH, Site::Uretprobe.addr())
        .expect("probe registered");
    assert_eq!(uret.returns, runs, "returns");
}

#[test]
fn hits_spread_over_many_probes_allocate_nothing_after_warm_up() {
    const PROBES: usize = 1_000;
    for xol in [false, true] {
        let mut many = Many::new(PROBES, 0, xol).expect("arming the probes");
        // Warm-up: one hit of every probe (each out-of-line probe has its own slot).
        for _ in 0..PROBES {
            assert!(many.hit_spread(), "warm-up hit not handled (xol: {xol})");
        }
        let before = allocations();
        for i in 0..HITS {
            assert!(many.hit_spread(), "hit {i} not handled (xol: {xol})");
        }
        let made = allocations() - before;
        assert_eq!(made, 0, "xol {xol}: {made} allocations in {HITS} hits");
    }
}
