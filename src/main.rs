// JSON records allocate many small strings and maps; mimalloc handles that churn far
// better than glibc malloc (see bench/sync_bench.py).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    source_loop::cli::main()
}
