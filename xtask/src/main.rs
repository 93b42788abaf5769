//! `cargo xtask`: fixture builds, QEMU checks, performance report.

fn main() {
    eprintln!("usage: cargo xtask <fixtures|qemu-user|qemu-test|perf>");
    std::process::exit(2);
}
