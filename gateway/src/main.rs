use std::process::ExitCode;

use gateway::{Application, Config, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let settings = match settings::load::<Config, Settings>() {
        Ok(settings) => settings,
        Err(exit) => return exit,
    };
    let result = async {
        let app = Application::build(settings).await?;
        tracing::info!(url = %format!("http://{}/", app.local_addr()), "gateway listening");
        app.run_until_stopped(telemetry::shutdown_signal()).await
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "gateway stopped");
            ExitCode::FAILURE
        }
    }
}
