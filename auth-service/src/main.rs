use auth_service::{Application, Config, Settings};

fn main() -> std::process::ExitCode {
    telemetry::run_service::<Config, Settings, _>("auth-service", |settings| async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(telemetry::shutdown_signal()).await
    })
}
