use std::process::ExitCode;

use auth_service::{Application, Config};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("invalid configuration: {e:#}");
        return ExitCode::from(64); // EX_USAGE
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "failed to start");
            return ExitCode::FAILURE;
        }
    };
    match app.run_until_stopped(telemetry::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped with an error");
            ExitCode::FAILURE
        }
    }
}
