//! Routes (path prefix → upstream, breaker, scopes, token bucket) and the
//! routing layer: it refuses paths that could escape a route prefix and
//! smuggling-shaped requests, picks the route, and answers 404/405/413
//! itself. Nothing it refuses reaches an upstream.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, Uri, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use breaker::Breaker;

use crate::{
    config::{Config, ConfigError, RouteConfig},
    problem::{Code, GatewayError},
    ratelimit::Bucket,
    state::Gateway,
};

/// One route, ready to serve.
#[derive(Debug)]
pub struct Route {
    /// The name (metrics label, breaker name, alerts).
    pub name: String,
    /// The path prefix (whole segments).
    pub prefix: String,
    /// The upstream's scheme.
    pub scheme: String,
    /// The upstream's `host:port`.
    pub authority: String,
    /// `host:port` of the upstream, for resolving it.
    pub address: String,
    /// The upstream URL's own path, prepended to the request path (no
    /// trailing `/`).
    pub base_path: String,
    /// How long the upstream may take to send its response headers.
    pub timeout: Duration,
    /// The scopes each method needs.
    pub scopes: BTreeMap<String, Vec<String>>,
    /// Paths with one of these segments need these scopes instead.
    pub segment_scopes: BTreeMap<String, Vec<String>>,
    /// Paths with one of these segments are never kept for stale reads.
    pub sensitive_segments: Vec<String>,
    /// The upstream's breaker.
    pub breaker: Breaker,
    /// The route's token buckets (per client).
    pub bucket: Bucket,
    /// The `RateLimit-Policy` field of the route (computed once).
    pub policy_field: Option<HeaderValue>,
    /// Requests in flight to the upstream at most (each holds one upstream
    /// connection): the others wait for a slot, within the route timeout.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Metric handles by method and status (looked up once each).
    metrics: crate::metrics::RouteMetrics,
}

impl Route {
    /// Builds the route of `config`.
    pub fn new(
        config: &RouteConfig,
        default_rate: crate::config::RateLimitConfig,
        max_in_flight: usize,
    ) -> Result<Self, ConfigError> {
        let uri: Uri = config.upstream.parse().map_err(|e| ConfigError::Invalid {
            key: format!("routes.{}.upstream", config.name()),
            message: format!("not a URL: {e}"),
        })?;
        let name = config.name();
        let bucket = Bucket::new(config.rate_limit.unwrap_or(default_rate));
        let policy_field = HeaderValue::from_str(&bucket.policy_field(&name)).ok();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(Self {
            address: if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            },
            scheme: uri.scheme_str().unwrap_or("http").to_owned(),
            authority: uri.authority().map(ToString::to_string).unwrap_or_default(),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            timeout: config.timeout.0,
            scopes: config.scopes.clone(),
            segment_scopes: config.segment_scopes.clone(),
            sensitive_segments: config.sensitive_segments.clone(),
            breaker: Breaker::new(&name, config.breaker.clone()),
            bucket,
            policy_field,
            slots: Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
            metrics: crate::metrics::RouteMetrics::default(),
            prefix: config.prefix.clone(),
            name,
        })
    }

    /// Whether `path` is under this route's prefix (whole segments).
    pub fn matches(&self, path: &str) -> bool {
        path.strip_prefix(self.prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The scopes `method` on `path` needs; `None`: the method is not
    /// allowed on this route.
    pub fn required_scopes(&self, method: &Method, path: &str) -> Option<&[String]> {
        let by_method = self.scopes.get(method.as_str())?;
        let by_segment = path
            .split('/')
            .find_map(|segment| self.segment_scopes.get(segment));
        Some(by_segment.unwrap_or(by_method))
    }

    /// Whether `path` is sensitive (its responses are never cached).
    pub fn is_sensitive(&self, path: &str) -> bool {
        path.split('/')
            .any(|segment| self.sensitive_segments.iter().any(|s| s == segment))
    }

    /// Counts one request of `method` answered with `status` after
    /// `elapsed`.
    pub fn record(&self, method: &Method, status: u16, elapsed: Duration) {
        self.metrics.record(&self.name, method, status, elapsed);
    }

    /// The methods this route allows, for `Allow`.
    pub fn allow(&self) -> String {
        self.scopes.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Every route, longest prefix first.
#[derive(Debug, Clone)]
pub struct Routes(pub Arc<Vec<Arc<Route>>>);

impl Routes {
    /// The routes of `config`.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let mut routes = config
            .routes
            .iter()
            .map(|r| {
                Route::new(r, config.rate_limit, config.server.upstream_max_in_flight).map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self(Arc::new(routes)))
    }

    /// The route serving `path`.
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        self.0.iter().find(|r| r.matches(path))
    }

    /// The route named `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<Route>> {
        self.0.iter().find(|r| r.name == name).cloned()
    }
}

/// Why a path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Not an absolute path.
    #[error("the path must start with `/`")]
    NotAbsolute,
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("dot segments are not allowed")]
    DotSegment,
    /// An encoded `/` or `\`, a `\`, a control character or a NUL.
    #[error("encoded separators and control characters are not allowed")]
    ForbiddenCharacter,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// `//` inside the path.
    #[error("empty path segments are not allowed")]
    EmptySegment,
}

/// Checks that `path` cannot mean something else after decoding or
/// normalisation: no `.`/`..` segments (also as `%2e`), no encoded `/` or
/// `\`, no control characters, no empty segments except a trailing `/`.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
        // The segment decoded, as far as it matters: its length and
        // whether it is all dots.
        let (mut length, mut dots) = (0usize, true);
        let bytes = segment.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            let b = bytes[j];
            let byte = if b == b'%' {
                let hex = bytes.get(j + 1..j + 3).ok_or(PathError::BadEscape)?;
                let text = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
                let value = u8::from_str_radix(text, 16).map_err(|_| PathError::BadEscape)?;
                j += 3;
                value
            } else {
                j += 1;
                b
            };
            if byte == b'/' || byte == b'\\' || byte < 0x20 || byte == 0x7f {
                return Err(PathError::ForbiddenCharacter);
            }
            length += 1;
            dots &= byte == b'.';
        }
        if dots && (length == 1 || length == 2) {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

/// The route a request was given to (request extension).
#[derive(Clone, Debug)]
pub struct MatchedRoute(pub Arc<Route>);

/// The route that answered, on the response (for the metrics layer).
#[derive(Clone, Debug)]
pub struct RouteLabel(pub Arc<Route>);

/// The layer: refuses bad paths and smuggling-shaped requests (400),
/// oversized declared bodies (413), unknown paths (404) and methods (405);
/// puts the [`MatchedRoute`] on the request.
pub async fn layer(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if let Err(error) = check_path(path) {
        tracing::warn!(%error, "refused path");
        return GatewayError::new(Code::BadRequest)
            .with_message(format!("Invalid path: {error}."))
            .into_response();
    }
    if let Err(message) = check_framing(&request) {
        tracing::warn!(message, "refused request framing");
        return GatewayError::new(Code::BadRequest)
            .with_message(message)
            .into_response();
    }
    let Some(route) = gateway.routes.find(path).cloned() else {
        return GatewayError::new(Code::NotFound).into_response();
    };
    let label = RouteLabel(Arc::clone(&route));
    if route.required_scopes(request.method(), path).is_none() {
        let allow = HeaderValue::from_str(&route.allow()).unwrap_or(HeaderValue::from_static(""));
        let mut response = GatewayError::new(Code::MethodNotAllowed)
            .header(header::ALLOW, allow)
            .into_response();
        response.extensions_mut().insert(label);
        return response;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > gateway.config.server.body_limit_bytes) {
        let mut response = GatewayError::new(Code::PayloadTooLarge).into_response();
        response.extensions_mut().insert(label);
        return response;
    }
    request.extensions_mut().insert(MatchedRoute(route));
    let mut response = next.run(request).await;
    response.extensions_mut().insert(label);
    response
}

/// Refuses what a front end and a back end could frame differently:
/// `Content-Length` together with `Transfer-Encoding`, several
/// `Content-Length`s, and any transfer coding but a single `chunked`.
fn check_framing(request: &Request) -> Result<(), &'static str> {
    let headers = request.headers();
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let codings: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if lengths > 0 && !codings.is_empty() {
        return Err("Content-Length and Transfer-Encoding together are not accepted.");
    }
    if lengths > 1 {
        return Err("Several Content-Length fields are not accepted.");
    }
    if !codings.is_empty()
        && (codings.len() > 1 || !codings[0].as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err("Only `Transfer-Encoding: chunked` is accepted.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_are_refused() {
        let cases: &[(&str, Result<(), PathError>)] = &[
            ("/api/stores", Ok(())),
            ("/api/stores/", Ok(())),
            ("/api/stores/0190-abc/history", Ok(())),
            ("/api/stores/a%20b", Ok(())),
            ("/api/stores/%252e%252e", Ok(())),
            ("/api/stores/..", Err(PathError::DotSegment)),
            ("/api/stores/../admin", Err(PathError::DotSegment)),
            ("/api/stores/./x", Err(PathError::DotSegment)),
            ("/api/stores/%2e%2e/admin", Err(PathError::DotSegment)),
            ("/api/stores/%2E./admin", Err(PathError::DotSegment)),
            ("/api/stores/.%2e", Err(PathError::DotSegment)),
            (
                "/api/stores%2f..%2fadmin",
                Err(PathError::ForbiddenCharacter),
            ),
            ("/api/stores/%2F", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%5c..", Err(PathError::ForbiddenCharacter)),
            ("/api/stores\\..\\admin", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%00", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%0d%0aX:1", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%zz", Err(PathError::BadEscape)),
            ("/api/stores/%2", Err(PathError::BadEscape)),
            ("/api//stores", Err(PathError::EmptySegment)),
            ("api/stores", Err(PathError::NotAbsolute)),
        ];
        for (path, expected) in cases {
            assert_eq!(check_path(path), *expected, "{path}");
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let config = Config::parse(
            r#"
            [auth]
            jwks_url = "http://127.0.0.1:1/keys"
            issuer = "i"
            audiences = ["a"]
            [[routes]]
            prefix = "/api/stores"
            upstream = "http://127.0.0.1:3000/base/"
            scopes = { GET = ["stores:read"], POST = ["stores:write"] }
            segment_scopes = { secrets = ["stores:secrets"] }
            "#,
        )
        .unwrap();
        let routes = Routes::new(&config).unwrap();
        assert!(routes.find("/api/stores").is_some());
        assert!(routes.find("/api/stores/1").is_some());
        assert!(routes.find("/api/storesX").is_none());
        assert!(routes.find("/api").is_none());
        let route = routes.find("/api/stores/1").unwrap();
        assert_eq!(route.base_path, "/base");
        assert_eq!(route.authority, "127.0.0.1:3000");
        let scopes = |m: Method, p: &str| route.required_scopes(&m, p).map(<[String]>::to_vec);
        assert_eq!(
            scopes(Method::GET, "/api/stores/1"),
            Some(vec!["stores:read".into()])
        );
        assert_eq!(
            scopes(Method::POST, "/api/stores"),
            Some(vec!["stores:write".into()])
        );
        assert_eq!(
            scopes(Method::GET, "/api/stores/1/secrets"),
            Some(vec!["stores:secrets".into()])
        );
        assert_eq!(scopes(Method::DELETE, "/api/stores/1"), None);
        assert_eq!(route.allow(), "GET, POST");
    }

    proptest::proptest! {
        /// No input panics, and an accepted path has no dot segment in
        /// any spelling.
        #[test]
        fn any_path(path in "/[a-zA-Z0-9%./\\\\_-]{0,40}") {
            if check_path(&path).is_ok() {
                let lowered = path.to_ascii_lowercase().replace("%2e", ".");
                proptest::prop_assert!(!lowered.split('/').any(|s| s == "." || s == ".."), "{}", path);
            }
        }
    }
}
