//! The canonical scenarios: traced by the simulator's snapshot tests and by the QEMU test
//! kernel, whose outputs must match byte for byte.

/// One fixture run with a set of probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// A stable name (snapshot file name, kernel output marker).
    pub name: &'static str,
    /// The fixture program (`fixtures/bin/NAME.elf`).
    pub fixture: &'static str,
    /// Probe specs, in registration order. A symbol ending in `*` stands for every
    /// function symbol with that prefix, in address order.
    pub probes: &'static [&'static str],
}

/// Every canonical scenario, in the order the kernel runs them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "hello_main",
        fixture: "hello",
        probes: &["uprobe:main", "uretprobe:main"],
    },
    Scenario {
        name: "fib_entry_return",
        fixture: "fib",
        probes: &["uprobe:fib", "uretprobe:fib"],
    },
    Scenario {
        name: "loops_branches",
        fixture: "loops",
        probes: &["uprobe:loops_all", "uretprobe:loops_all"],
    },
    Scenario {
        name: "calls_tail",
        fixture: "calls",
        probes: &[
            "uprobe:tail_a",
            "uretprobe:tail_a",
            "uretprobe:tail_b",
            "uretprobe:dispatch",
        ],
    },
    Scenario {
        name: "longjmp_cleanup",
        fixture: "longjmp",
        probes: &["uretprobe:jump_deep", "uretprobe:do_longjmp_test"],
    },
    Scenario {
        name: "deep_missed",
        fixture: "deep",
        probes: &["uretprobe:deep"],
    },
    Scenario {
        name: "trap_self",
        fixture: "trap_self",
        probes: &["uprobe:main"],
    },
    Scenario {
        // The probed load faults in its XOL slot: the kill names the probed address.
        name: "xol_fault_fixup",
        fixture: "xol_fault",
        probes: &["uprobe:fault_load"],
    },
    Scenario {
        name: "insn_zoo_all",
        fixture: "insn_zoo",
        probes: &["uprobe:zoo_*"],
    },
    Scenario {
        name: "forker_parent_child",
        fixture: "forker",
        probes: &["uprobe:main", "uprobe:child_work", "uretprobe:child_work"],
    },
    Scenario {
        // 640 out-of-line probes armed in one fresh process: two XOL pages, allocated on the
        // QEMU kernel's 8 KiB per-process kernel stack.
        name: "xol_pages_640",
        fixture: "xol_pages",
        probes: &["uprobe:site_*"],
    },
];

/// A scenario whose probes are the programs of a BPF object, attached where their sections
/// say (`uprobe/SYM`, `uretprobe/SYM`, a seed tracepoint name). Its block has the trace
/// (with `bpf_trace_printk` lines), then `--- bpf` and the object's maps and per-program
/// counters, then the output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfScenario {
    /// A stable name (kernel output marker).
    pub name: &'static str,
    /// The fixture program (`fixtures/bin/NAME.elf`).
    pub fixture: &'static str,
    /// The object (`fixtures/bpf/OBJECT.bpf.o`).
    pub object: &'static str,
    /// Whether its maps depend on `bpf_ktime_get_ns`, the user instruction clock. The QEMU
    /// kernel keeps that clock exactly only under `-icount shift=0` (where `instret` counts
    /// instructions), so `cargo xtask qemu-test` compares such a scenario from that boot.
    pub exact_clock: bool,
}

/// Every eBPF scenario, run by the kernel after [`SCENARIOS`].
pub const BPF_SCENARIOS: &[BpfScenario] = &[
    BpfScenario {
        name: "bpf_count_sort",
        fixture: "sort",
        object: "count",
        exact_clock: false,
    },
    BpfScenario {
        // sift_down's latency in user instructions: entry/return pairs by thread id.
        name: "bpf_latency_sort",
        fixture: "sort",
        object: "latency",
        exact_clock: true,
    },
    BpfScenario {
        name: "bpf_filter_fib",
        fixture: "fib",
        object: "filter",
        exact_clock: false,
    },
    BpfScenario {
        // The return value by bpf_get_func_ret and by the context's a0, at uretprobe/fib.
        name: "bpf_ret_fib",
        fixture: "fib",
        object: "ret",
        exact_clock: false,
    },
    BpfScenario {
        name: "bpf_greet_strings",
        fixture: "greet",
        object: "greet",
        exact_clock: false,
    },
    BpfScenario {
        // Stopped at every hit (out-of-bounds context read), counted; fib goes on.
        name: "bpf_oob_read_stopped",
        fixture: "fib",
        object: "bad/oob_read",
        exact_clock: false,
    },
    BpfScenario {
        // Stopped at every hit (a store into the context), counted; fib's a0 is untouched.
        name: "bpf_ctx_write_stopped",
        fixture: "fib",
        object: "bad/ctx_write",
        exact_clock: false,
    },
    BpfScenario {
        // Runs past its instruction budget at main's one hit: stopped, counted; fib goes on.
        name: "bpf_budget_stopped",
        fixture: "fib",
        object: "bad/spin_main",
        exact_clock: false,
    },
];
