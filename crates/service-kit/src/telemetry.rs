//! Logging and tracing: `tracing` with JSON lines (or text) on stderr,
//! filtered by `RUST_LOG` (default `info`); each request's lines carry its
//! `request` span (see [`request_id`](crate::request_id)).
//!
//! With the `otlp` feature (default) and an endpoint (the value of
//! [`OTLP_ENDPOINT`]), spans are also exported over OTLP (HTTP/protobuf,
//! through reqwest on the service's runtime) with `tracing-opentelemetry`,
//! a W3C `traceparent` on a request becomes the parent of its span
//! ([`set_remote_parent`]), and [`inject_current`] propagates the trace
//! context to an upstream. Without the feature these two do nothing and
//! an endpoint is ignored (with a line on stderr).

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// The environment variable that turns OTLP export on.
pub const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Flushes exported spans when dropped (keep it until `main` returns).
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops the OTLP export"]
pub struct TelemetryGuard {
    /// The OTLP pipeline, when on.
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber for service `service` (the tracer's
/// name, and the prefix of the one line printed when the OTLP export
/// cannot start): `format` `text` for human-readable lines, anything else
/// for JSON lines; OTLP export to `otlp_endpoint` (the value of
/// [`OTLP_ENDPOINT`]) when given and not blank. Call inside the tokio
/// runtime. Does nothing when a subscriber is already installed.
pub fn init(service: &'static str, format: &str, otlp_endpoint: Option<&str>) -> TelemetryGuard {
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
    let endpoint = otlp_endpoint.filter(|e| !e.trim().is_empty());
    #[cfg(feature = "otlp")]
    {
        let (provider, traces) = otlp::start(service, endpoint);
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .with(traces)
            .try_init();
        TelemetryGuard { provider }
    }
    #[cfg(not(feature = "otlp"))]
    {
        if endpoint.is_some() {
            eprintln!("{service}: OTLP export disabled: built without the `otlp` feature");
        }
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(logs)
            .try_init();
        TelemetryGuard {}
    }
}

/// Makes a request's W3C `traceparent` the parent of `span` (no-op without
/// OTLP export).
pub fn set_remote_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    #[cfg(feature = "otlp")]
    otlp::set_remote_parent(span, headers);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, headers);
}

/// Writes the current span's W3C trace context into `headers` (a request
/// to an upstream), so the upstream's spans are children of this service's.
/// Without OTLP export no propagator is installed and this does nothing: a
/// `traceparent` already in `headers` then passes unchanged.
pub fn inject_current(headers: &mut axum::http::HeaderMap) {
    #[cfg(feature = "otlp")]
    otlp::inject_current(headers);
    #[cfg(not(feature = "otlp"))]
    let _ = headers;
}

/// The OTLP pipeline (feature `otlp`).
#[cfg(feature = "otlp")]
mod otlp {
    use std::{
        fmt,
        future::Future,
        pin::Pin,
        sync::atomic::{AtomicBool, Ordering},
    };

    use axum::body::Bytes;
    use opentelemetry::{global, trace::TracerProvider as _};
    use opentelemetry_http::{HttpClient, HttpError, Request, Response};
    use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
    use tracing_subscriber::registry::LookupSpan;

    /// Whether OTLP export is on (spans have a trace context to propagate).
    static EXPORTING: AtomicBool = AtomicBool::new(false);

    /// Starts the export to `endpoint`, when given: the provider (kept by
    /// the guard) and the layer turning spans into exported ones.
    pub(super) fn start<S>(
        service: &'static str,
        endpoint: Option<&str>,
    ) -> (
        Option<SdkTracerProvider>,
        Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>>,
    )
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        let provider = endpoint.and_then(|endpoint| match provider(endpoint) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("{service}: OTLP export disabled: {error}");
                None
            }
        });
        EXPORTING.store(provider.is_some(), Ordering::Relaxed);
        let traces = provider.as_ref().map(|provider| {
            global::set_text_map_propagator(TraceContextPropagator::new());
            tracing_opentelemetry::layer().with_tracer(provider.tracer(service))
        });
        (provider, traces)
    }

    /// HTTP/protobuf to `<endpoint>/v1/traces`, batched.
    fn provider(endpoint: &str) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
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

    /// The exporter's HTTP client: async reqwest, run on the service's
    /// runtime (the batch processor exports from its own thread).
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

    /// See [`super::set_remote_parent`].
    pub(super) fn set_remote_parent(span: &tracing::Span, headers: &axum::http::HeaderMap) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        if !headers.contains_key("traceparent") {
            return;
        }
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&opentelemetry_http::HeaderExtractor(headers))
        });
        let _ = span.set_parent(parent);
    }

    /// See [`super::inject_current`].
    pub(super) fn inject_current(headers: &mut axum::http::HeaderMap) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        if !EXPORTING.load(Ordering::Relaxed) {
            return;
        }
        let context = tracing::Span::current().context();
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
        });
    }
}
