use clap::Parser;
use gateway::{Application, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init();
    let config = match Config::try_parse() {
        Ok(config) => config,
        Err(error) => error.exit(),
    };
    let result = async {
        let app = Application::build(config).await?;
        tracing::info!(url = %format!("http://{}/", app.local_addr()), "gateway listening");
        app.run_until_stopped(telemetry::shutdown_signal()).await
    };
    match result.await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "gateway stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
