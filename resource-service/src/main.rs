use resource_service::{Application, Config, Settings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    telemetry::run_service::<Config, Settings, _>("resource-service", |settings| async {
        let app = Application::build(settings).await?;
        app.run_until_stopped(telemetry::shutdown_signal()).await
    })
}
