fn main() -> std::process::ExitCode {
    bunko_server::cli::main()
}
