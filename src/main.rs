//! `agriportal`: one binary, many roles. See `agriportal --help`.

/// jemalloc rather than the system allocator: it returns memory freed after a burst (a
/// backfill's pushes, a rebuild) to the system within seconds, where glibc kept it resident.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match agriportal::cli::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
