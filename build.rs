//! Links the `ouli` binary as a position-dependent executable on Linux
//! (`-no-pie`): a PIE carries one dynamic relocation for every pointer in its
//! data (~0.18 MB of `.rela.dyn` here), which a binary held to 5 MB
//! (rfcs/0003, Binary size) cannot spare. The code is still compiled
//! position-independent (proc-macros need that); only the link changes, and
//! the glibc the binary needs stays the same. The cost: the executable's own
//! code and data load at a fixed address (shared libraries, stack and heap
//! are still randomized). Tests, benches and the library are not affected.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
