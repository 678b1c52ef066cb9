//! Deciding what a call's result means for the breaker.

/// What a finished call means for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed; it counts toward the failure rate.
    Failure,
    /// The call took too long; it counts as a failure and is reported as a
    /// timeout of its own in snapshots and metrics.
    Timeout,
    /// The call says nothing about the protected service's health (a caller
    /// error such as a 404, or a cancelled call). It is not counted in the
    /// window, and in half-open it frees its probe slot.
    Ignore,
}

/// Maps a call's whole `Result` to an [`Outcome`].
///
/// Closures `Fn(&Result<T, E>) -> Outcome` implement it.
///
/// ```
/// use breaker::{Classify, Outcome};
///
/// // A "not found" is the caller's problem, not the service's.
/// let classifier = |result: &Result<String, std::io::Error>| match result {
///     Ok(_) => Outcome::Success,
///     Err(e) if e.kind() == std::io::ErrorKind::NotFound => Outcome::Ignore,
///     Err(_) => Outcome::Failure,
/// };
/// let not_found = Err(std::io::Error::from(std::io::ErrorKind::NotFound));
/// assert_eq!(classifier.classify(&not_found), Outcome::Ignore);
/// ```
pub trait Classify<T, E> {
    /// The outcome of a finished call.
    fn classify(&self, result: &Result<T, E>) -> Outcome;

    /// The outcome of a call whose future was dropped before it finished.
    /// By default [`Outcome::Ignore`]: a cancelled call frees its probe slot
    /// and counts nothing.
    fn cancelled(&self) -> Outcome {
        Outcome::Ignore
    }
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, every `Err` a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnyError;

impl<T, E> Classify<T, E> for AnyError {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Something that carries an HTTP status code.
pub trait HttpStatus {
    /// The status code (e.g. 503).
    fn status_code(&self) -> u16;
}

impl HttpStatus for u16 {
    fn status_code(&self) -> u16 {
        *self
    }
}

#[cfg(feature = "http")]
impl HttpStatus for http::StatusCode {
    fn status_code(&self) -> u16 {
        self.as_u16()
    }
}

#[cfg(feature = "http")]
impl<B> HttpStatus for http::Response<B> {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// The outcome of an HTTP status: 5xx, 429 (Too Many Requests) and 408
/// (Request Timeout) are failures; other 4xx are the caller's doing and are
/// ignored; everything else is a success.
pub const fn http_status_outcome(status: u16) -> Outcome {
    match status {
        408 | 429 | 500..=599 => Outcome::Failure,
        400..=499 => Outcome::Ignore,
        _ => Outcome::Success,
    }
}

/// Classifies HTTP responses with [`http_status_outcome`]; every `Err`
/// (connection refused, reset, the client's own timeout) is a failure, and
/// the breaker's own timeout is [`Outcome::Timeout`].
///
/// ```
/// use breaker::{Classify, HttpClassifier, Outcome};
///
/// let ok: Result<u16, ()> = Ok(200);
/// let not_found: Result<u16, ()> = Ok(404);
/// let throttled: Result<u16, ()> = Ok(429);
/// let unavailable: Result<u16, ()> = Ok(503);
/// assert_eq!(HttpClassifier.classify(&ok), Outcome::Success);
/// assert_eq!(HttpClassifier.classify(&not_found), Outcome::Ignore);
/// assert_eq!(HttpClassifier.classify(&throttled), Outcome::Failure);
/// assert_eq!(HttpClassifier.classify(&unavailable), Outcome::Failure);
/// assert_eq!(HttpClassifier.classify(&Err::<u16, ()>(())), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier;

impl<T: HttpStatus, E> Classify<T, E> for HttpClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(response) => http_status_outcome(response.status_code()),
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_table() {
        let cases = [
            (100, Outcome::Success),
            (200, Outcome::Success),
            (204, Outcome::Success),
            (301, Outcome::Success),
            (400, Outcome::Ignore),
            (401, Outcome::Ignore),
            (404, Outcome::Ignore),
            (408, Outcome::Failure),
            (409, Outcome::Ignore),
            (429, Outcome::Failure),
            (499, Outcome::Ignore),
            (500, Outcome::Failure),
            (503, Outcome::Failure),
            (504, Outcome::Failure),
            (599, Outcome::Failure),
        ];
        for (status, expected) in cases {
            assert_eq!(http_status_outcome(status), expected, "status {status}");
        }
    }

    #[test]
    fn any_error_and_cancellation_defaults() {
        let ok: Result<(), ()> = Ok(());
        let err: Result<(), ()> = Err(());
        assert_eq!(AnyError.classify(&ok), Outcome::Success);
        assert_eq!(AnyError.classify(&err), Outcome::Failure);
        assert_eq!(Classify::<(), ()>::cancelled(&AnyError), Outcome::Ignore);
    }

    #[cfg(feature = "http")]
    #[test]
    fn http_types_carry_status() {
        let response = http::Response::builder().status(503).body(()).ok();
        assert_eq!(response.map(|r| r.status_code()), Some(503));
        assert_eq!(http::StatusCode::NOT_FOUND.status_code(), 404);
    }
}
