fn main() -> std::process::ExitCode {
    graygate::cli::main()
}
