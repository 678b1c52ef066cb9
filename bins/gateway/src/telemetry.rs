//! Logging and tracing: `tracing` with JSON lines (or text), filtered by
//! `RUST_LOG` (default `info`); each request's lines carry its `request`
//! span (request id, method, path). When `OTEL_EXPORTER_OTLP_ENDPOINT` is
//! set, spans are also exported over OTLP (HTTP/protobuf, through the
//! workspace's reqwest) with `tracing-opentelemetry`, and a W3C
//! `traceparent` on a request becomes the parent of its span.

use std::{fmt, future::Future, pin::Pin};

use axum::body::Bytes;
use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Whether OTLP export is on (spans have a trace context to propagate).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The environment variable that turns OTLP export on.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Flushes exported spans when dropped (keep it until `main` returns).
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    /// The OTLP pipeline, when on.
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber (`format`: `json` or `text`), with OTLP
/// export to `otlp_endpoint` (the value of [`OTLP_ENDPOINT`]) when given.
/// Call inside the tokio runtime. Does nothing when a subscriber is already
/// installed.
pub fn init(format: &str, otlp_endpoint: Option<&str>) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = if format == "text" {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = otlp_endpoint
        .filter(|e| !e.trim().is_empty())
        .and_then(|endpoint| match otlp_provider(endpoint) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("gateway: OTLP export disabled: {error}");
                None
            }
        });
    EXPORTING.store(provider.is_some(), std::sync::atomic::Ordering::Relaxed);
    let traces = provider.as_ref().map(|provider| {
        global::set_text_map_propagator(TraceContextPropagator::new());
        tracing_opentelemetry::layer().with_tracer(provider.tracer("gateway"))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init();
    TelemetryGuard { provider }
}

/// The OTLP pipeline: HTTP/protobuf to `<endpoint>/v1/traces`, batched.
fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let client = OtlpHttp {
        client: reqwest::Client::builder().build()?,
        runtime: tokio::runtime::Handle::try_current()?,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_http_client(client)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build())
}

/// The exporter's HTTP client: the workspace's async reqwest, run on the
/// service's runtime (the batch processor exports from its own thread).
struct OtlpHttp {
    /// The client.
    client: reqwest::Client,
    /// The service's runtime.
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for OtlpHttp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtlpHttp")
    }
}

impl HttpClient for OtlpHttp {
    fn send_bytes<'a, 'b>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let mut answer = Response::builder().status(response.status());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let body = response.bytes().await?;
            Ok::<_, HttpError>(answer.body(body)?)
        });
        Box::pin(async move { task.await? })
    }
}

/// Makes a request's W3C `traceparent` the parent of `span` (no-op without
/// OTLP export).
pub fn set_remote_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

/// Writes the current span's W3C trace context into `headers`, so the
/// upstream's spans are children of the gateway's. Without OTLP export no
/// propagator is installed and this does nothing: the client's
/// `traceparent` is then forwarded unchanged.
pub fn inject_current(headers: &mut axum::http::HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if !EXPORTING.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
    });
}
