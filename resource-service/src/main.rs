use std::process::ExitCode;

use clap::Parser;
use resource_service::{Application, Config};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let config = Config::parse();
    if let Err(e) = config.validate() {
        eprintln!("invalid configuration: {e}");
        return ExitCode::from(64); // EX_USAGE
    }
    let result = async {
        let app = Application::build(config).await?;
        app.run_until_stopped(telemetry::shutdown_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, "resource-service failed");
            ExitCode::FAILURE
        }
    }
}
