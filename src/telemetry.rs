//! Logging and tracing: JSON lines in production, human-readable in
//! development; spans exported over OTLP when `OTEL_EXPORTER_OTLP_*` says
//! where (see [`crate::trace`] for the trace context itself).

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogConfig, LogFormat, OtlpConfig};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber; later calls are no-ops (tests build many
/// apps). An OTLP exporter that cannot be built is reported on stderr and
/// left out: telemetry never stops the service.
pub fn init(config: &LogConfig) {
    init_with_writer(config, std::io::stdout);
}

/// As [`init`], writing log lines to `writer` (tests capture them).
pub fn init_with_writer<W>(config: &LogConfig, writer: W)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = config
        .otlp
        .as_ref()
        .and_then(|otlp| match otel_layer(otlp) {
            Ok(layer) => Some(layer),
            Err(e) => {
                eprintln!("precinct: OTLP export disabled: {e}");
                None
            }
        });
    let exporting = otel.is_some();
    let fmt = match config.format {
        LogFormat::Json => fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(writer).compact().boxed(),
    };
    if tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .try_init()
        .is_ok()
        && exporting
    {
        crate::trace::set_exporting();
    }
}

fn otel_layer<S>(
    config: &OtlpConfig,
) -> Result<
    tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>,
    opentelemetry_otlp::ExporterBuildError,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&config.traces_endpoint)
        .with_timeout(config.timeout)
        .build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(config.service_name.clone())
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    crate::build_info::VERSION,
                ))
                .build(),
        )
        .build();
    let tracer = provider.tracer("precinct");
    let _ = PROVIDER.set(provider);
    Ok(tracing_opentelemetry::layer().with_tracer(tracer))
}

/// Sends the spans still buffered (tests; the binary's exit calls
/// [`shutdown`]). Blocking: call it from `spawn_blocking` in async code.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.force_flush();
    }
}

/// Flushes and stops the exporter.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        let _ = provider.shutdown();
    }
}
