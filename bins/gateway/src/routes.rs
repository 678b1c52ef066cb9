//! The route table, built once from the configuration: each [`Route`]
//! (path prefix → upstream, breaker, scopes, token bucket, upstream slots,
//! metric handles) and [`Routes`], longest prefix first. The layers read
//! it: routing picks the [`MatchedRoute`], authentication checks its
//! scopes, the rate limit takes from its bucket, the proxy forwards to its
//! upstream, and the metrics layer counts by its [`RouteLabel`].

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::http::{HeaderValue, Method, Uri};
use breaker::Breaker;
use metrics::{Counter, Histogram};
use service_kit::prometheus::method_label;

use crate::{
    config::{Config, ConfigError, RateLimitConfig, RouteConfig},
    limiter::Bucket,
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
    /// The path of the upstream's OpenAPI document, if it has one.
    pub openapi: Option<String>,
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
    metrics: RouteMetrics,
}

impl Route {
    /// Builds the route of `config`.
    pub fn new(
        config: &RouteConfig,
        default_rate: RateLimitConfig,
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
            openapi: config.openapi.clone(),
            sensitive_segments: config.sensitive_segments.clone(),
            breaker: Breaker::new(&name, config.breaker.clone()),
            bucket,
            policy_field,
            slots: Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1))),
            metrics: RouteMetrics::default(),
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

/// The route a request was given to (request extension).
#[derive(Clone, Debug)]
pub struct MatchedRoute(pub Arc<Route>);

/// The route that answered, on the response (for the metrics layer).
#[derive(Clone, Debug)]
pub struct RouteLabel(pub Arc<Route>);

/// A route's metric handles by method label and status, so the hot path
/// does not rebuild and hash label sets for every request (bounded: ten
/// method labels times the status codes).
#[derive(Default)]
pub struct RouteMetrics(std::sync::RwLock<HandlesByLabels>);

/// Metric handles by (method label, status).
type HandlesByLabels = std::collections::HashMap<(&'static str, u16), (Counter, Histogram)>;

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

impl RouteMetrics {
    /// Counts one request of route `route`.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let key = (method_label(method), status);
        let known = self.0.read().ok().and_then(|m| m.get(&key).cloned());
        let (counter, histogram) = known.unwrap_or_else(|| {
            let labels = [
                ("route", route.to_owned()),
                ("method", key.0.to_owned()),
                ("status", status.to_string()),
            ];
            let handles = (
                metrics::counter!("gateway_requests_total", &labels),
                metrics::histogram!("gateway_request_duration_seconds", &labels),
            );
            if let Ok(mut map) = self.0.write() {
                map.insert(key, handles.clone());
            }
            handles
        });
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
