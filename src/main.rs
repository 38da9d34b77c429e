//! The `nixcmd` binary: everything lives in the library; this only hands over the arguments
//! and returns the exit code.

fn main() -> std::process::ExitCode {
    let code = nixcmd::app::main(std::env::args_os());
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
