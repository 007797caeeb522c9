//! The `idp` binary: see `idp --help`.

/// mimalloc rather than glibc's malloc: the token endpoint's requests spend
/// about a sixth of their CPU time in allocation and freeing across threads
/// (the runtime's workers and the database's connection threads), where
/// glibc's arenas consolidate and lock (perf; bench/fixes.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    idp::cli::main()
}
