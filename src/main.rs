//! `agriportal`: one binary, many roles. See `agriportal --help`.

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
