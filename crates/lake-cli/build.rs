//! Link-time identical code folding for the `lake` binary.
//!
//! Rust copies every `#[inline]` function (derived `Clone`, `Debug`, `PartialEq` and `Hash`
//! among them) into each crate that calls it, and even fat LTO keeps those copies as separate
//! functions: the `dist` binary held 15 identical copies of sqlparser's `Statement::clone`
//! (BENCHMARKS.md, "The binary"). The linker can fold functions whose code is identical
//! (`--icf=all`); Rust does not promise distinct addresses for distinct functions, so this is
//! sound. Only where the linker is known to be LLD (Rust's default on x86_64 Linux since 1.90,
//! unless the build picks another linker through RUSTFLAGS): GNU ld has no such option.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let lld_by_default = var("TARGET") == "x86_64-unknown-linux-gnu";
    let own_linker = var("CARGO_ENCODED_RUSTFLAGS").contains("linker");
    // `release` covers the profiles that inherit it (`dist`, `bench`); debug builds stay as fast
    // to link as they are.
    if lld_by_default && !own_linker && var("PROFILE") == "release" {
        println!("cargo::rustc-link-arg-bins=-Wl,--icf=all");
    }
}
