//! The `idp` binary: see `idp --help`.

fn main() -> std::process::ExitCode {
    idp::cli::main()
}
