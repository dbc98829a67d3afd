#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    graygate::cli::main()
}
