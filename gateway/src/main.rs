use gateway::{Application, Config, Settings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    telemetry::run_service_with::<Config, Settings, _>(
        "gateway",
        telemetry::LogLines::Buffered,
        |settings| async {
            let app = Application::build(settings).await?;
            tracing::info!(url = %format!("http://{}/", app.local_addr()), "gateway listening");
            app.run_until_stopped(telemetry::shutdown_signal()).await
        },
    )
}
