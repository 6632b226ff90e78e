use directory::{Application, Config, Settings};

fn main() -> std::process::ExitCode {
    telemetry::run_service::<Config, Settings, _>("directory", |settings| async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(telemetry::shutdown_signal()).await
    })
}
