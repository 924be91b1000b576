//! `tap-loop`: the Singer tap (Meltano's `executable:`). Everything is in
//! [`source_loop::singer`]; this only picks the allocator and maps the exit code.

// the same allocator as `source-loop` (see src/main.rs)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    source_loop::singer::main()
}
