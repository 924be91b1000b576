fn main() -> std::process::ExitCode {
    source_loop::cli::main()
}
