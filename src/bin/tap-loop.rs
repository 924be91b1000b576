//! `tap-loop`: the Singer tap (Meltano's `executable:`). Everything is in
//! [`source_loop::command::tap`]; this only picks the allocator and maps the exit status.

// the same allocator as `source-loop` (see src/main.rs)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    source_loop::command::tap::main().into()
}
