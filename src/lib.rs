//! Shared helpers of the ruprobes integration tests and benchmarks.
