//! The `nixcmd` binary: everything lives in the library; this only hands over the arguments
//! and returns the exit code.

/// Large blocks in huge pages: fewer page faults for a large runbook (see the module).
#[global_allocator]
static ALLOC: nixcmd::huge_alloc::HugeAdvising = nixcmd::huge_alloc::HugeAdvising;

fn main() -> std::process::ExitCode {
    let code = nixcmd::app::main(std::env::args_os());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
