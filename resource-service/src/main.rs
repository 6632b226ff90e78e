use std::process::ExitCode;

use resource_service::{Application, Config, Settings};

#[tokio::main]
async fn main() -> ExitCode {
    telemetry::init();
    let settings = match settings::load::<Config, Settings>() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let result = async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(telemetry::shutdown_signal()).await
    };
    telemetry::exit_code("resource-service", result.await)
}
