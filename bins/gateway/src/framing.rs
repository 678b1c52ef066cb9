//! Request smuggling guard, below the HTTP parser. hyper follows RFC 9112
//! when a request carries both `Content-Length` and `Transfer-Encoding`
//! (chunked wins, the length is dropped, the connection closes after the
//! answer) and accepts a bare LF as a line end; by the time a request
//! reaches a layer, nothing of either is visible. The gateway refuses
//! them instead: [`FramingGuard`] watches the bytes of every request head
//! on a connection (skipping bodies by their framing) and, in a head with
//!
//! - `Content-Length` together with `Transfer-Encoding`,
//! - more than one `Content-Length`,
//! - a bare CR or a bare LF, or an obsolete line folding,
//!
//! replaces the first byte of the request line with a byte no method may
//! contain, so the parser answers `400 Bad Request` and closes the
//! connection. Nothing of such a request is forwarded.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};

/// The longest head watched; a longer one is left to the parser (which
/// refuses it).
const MAX_HEAD: usize = 64 * 1024;

/// The largest released-bytes buffer kept between reads.
const KEEP_CAPACITY: usize = 1024;

/// The byte written over the request line of a refused head.
const POISON: u8 = 0x01;

/// Where the scanner is in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head,
    /// Inside a body of known length: bytes left.
    Length(u64),
    /// A chunk-size line.
    ChunkSize,
    /// Chunk data: bytes left (including the CRLF after it).
    ChunkData(u64),
    /// The trailer section, after the last chunk.
    Trailers,
    /// Not watching any more (after a refused head, or input the parser
    /// will refuse anyway).
    Off,
}

/// The byte-stream scanner (pure: no IO).
#[derive(Debug)]
pub struct Scanner {
    /// The state.
    state: State,
    /// The head or line being collected.
    line: Vec<u8>,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            state: State::Head,
            line: Vec::new(),
        }
    }
}

impl Scanner {
    /// Consumes `input`, appending to `out` the bytes the parser may see
    /// now (a head is held back until it is complete).
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.state {
                State::Off => {
                    out.extend_from_slice(input);
                    return;
                }
                State::Head => {
                    let before = self.line.len();
                    self.line.extend_from_slice(input);
                    // Leading empty lines before a request line are allowed.
                    let start = self.line.iter().position(|b| *b != b'\r' && *b != b'\n');
                    let end = start.and_then(|s| head_end(&self.line[s..]).map(|e| s + e));
                    match end {
                        Some(end) => {
                            let consumed = end.saturating_sub(before).min(input.len());
                            let start = start.unwrap_or(0);
                            let next = match judge(&self.line[start..end]) {
                                Ok(next) => next,
                                Err(()) => {
                                    self.line[start] = POISON;
                                    State::Off
                                }
                            };
                            out.extend_from_slice(&self.line[..end]);
                            // Keep the buffer's capacity for the next head.
                            self.line.clear();
                            self.state = next;
                            input = &input[consumed..];
                        }
                        None if self.line.len() > MAX_HEAD => {
                            out.append(&mut self.line);
                            self.state = State::Off;
                            return;
                        }
                        None => return,
                    }
                }
                State::Length(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::Head
                    } else {
                        State::Length(left)
                    };
                }
                State::ChunkData(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::ChunkSize
                    } else {
                        State::ChunkData(left)
                    };
                }
                State::ChunkSize | State::Trailers => {
                    let Some(newline) = input.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(input);
                        out.extend_from_slice(input);
                        if self.line.len() > MAX_HEAD {
                            self.state = State::Off;
                        }
                        return;
                    };
                    self.line.extend_from_slice(&input[..=newline]);
                    out.extend_from_slice(&input[..=newline]);
                    input = &input[newline + 1..];
                    let line = std::mem::take(&mut self.line);
                    let text = trim_line(&line);
                    self.state = if self.state == State::Trailers {
                        if text.is_empty() {
                            State::Head
                        } else {
                            State::Trailers
                        }
                    } else {
                        let digits = text.split(|b| *b == b';').next().unwrap_or_default();
                        match std::str::from_utf8(digits)
                            .ok()
                            .and_then(|d| u64::from_str_radix(d.trim(), 16).ok())
                        {
                            Some(0) => State::Trailers,
                            Some(size) => State::ChunkData(size.saturating_add(2)),
                            None => State::Off,
                        }
                    };
                }
            }
        }
    }
}

/// The line without its CRLF or LF.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The length of the head in `bytes` (through its empty line), if complete.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|b| *b == b'\n') {
        let newline = i + offset;
        match bytes.get(newline + 1) {
            Some(b'\n') => return Some(newline + 2),
            Some(b'\r') if bytes.get(newline + 2) == Some(&b'\n') => return Some(newline + 3),
            Some(_) => i = newline + 1,
            None => return None,
        }
    }
    None
}

/// Checks a complete head; the state after it, or `Err` to refuse it.
fn judge(head: &[u8]) -> Result<State, ()> {
    for (i, byte) in head.iter().enumerate() {
        let bare_cr = *byte == b'\r' && head.get(i + 1) != Some(&b'\n');
        let bare_lf = *byte == b'\n' && (i == 0 || head[i - 1] != b'\r');
        if bare_cr || bare_lf {
            return Err(());
        }
    }
    let mut lengths = Vec::new();
    let mut codings = Vec::new();
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = trim_line(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            return Err(());
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = || {
            String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_owned()
        };
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths.push(value());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings.push(value());
        }
    }
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(State::Head),
        ([length], []) => Ok(length.parse().map_or(State::Off, |n: u64| {
            if n == 0 {
                State::Head
            } else {
                State::Length(n)
            }
        })),
        ([], [coding]) if coding.eq_ignore_ascii_case("chunked") => Ok(State::ChunkSize),
        // Other codings: the parser refuses them itself.
        ([], _) => Ok(State::Off),
        _ => Err(()),
    }
}

/// A connection whose request heads are watched by a [`Scanner`].
#[derive(Debug)]
pub struct FramingGuard<S> {
    /// The connection.
    inner: S,
    /// The scanner.
    scanner: Scanner,
    /// Bytes released to the parser, not yet read.
    pending: Vec<u8>,
    /// How much of `pending` was read.
    offset: usize,
}

impl<S> FramingGuard<S> {
    /// Watches `inner`.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            scanner: Scanner::default(),
            pending: Vec::new(),
            offset: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.offset < this.pending.len() {
                let n = (this.pending.len() - this.offset).min(out.remaining());
                out.put_slice(&this.pending[this.offset..this.offset + n]);
                this.offset += n;
                if this.offset == this.pending.len() {
                    // A large buffer is given back: an idle keep-alive
                    // connection should not keep a body's worth of it.
                    if this.pending.capacity() > KEEP_CAPACITY {
                        this.pending = Vec::new();
                    } else {
                        this.pending.clear();
                    }
                    this.offset = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut buffer = [0u8; 8192];
            let mut read = ReadBuf::new(&mut buffer);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // End of stream: release a partial head as it is.
                    if !this.scanner.line.is_empty() && this.scanner.state == State::Head {
                        this.pending.append(&mut this.scanner.line);
                        continue;
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => this.scanner.feed(read.filled(), &mut this.pending),
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A TCP listener whose connections are [`FramingGuard`]ed (and
/// `TCP_NODELAY`).
#[derive(Debug)]
pub struct GuardedListener {
    /// The listener.
    inner: TcpListener,
}

impl GuardedListener {
    /// Wraps `inner`.
    pub fn new(inner: TcpListener) -> Self {
        Self { inner }
    }
}

impl axum::serve::Listener for GuardedListener {
    type Io = FramingGuard<TcpStream>;
    type Addr = ClientAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    return (FramingGuard::new(stream), ClientAddr(address));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait, retry.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr().map(ClientAddr)
    }
}

/// The client's address, as `ConnectInfo<ClientAddr>` on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes; returns the output.
    fn scan(input: &[u8], step: usize) -> Vec<u8> {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            scanner.feed(piece, &mut out);
        }
        out
    }

    /// The first byte of each request line in `output`.
    fn poisoned(output: &[u8]) -> bool {
        output.contains(&POISON)
    }

    #[test]
    fn clean_traffic_passes_unchanged_in_any_pieces() {
        let pipelined = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /y HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nTrans\r\n3\r\nfer\r\n0\r\nX-Trailer: 1\r\n\r\n\
GET /z HTTP/1.1\r\nHost: a\r\n\r\n";
        for step in [1, 2, 7, 64, pipelined.len()] {
            assert_eq!(scan(pipelined, step), pipelined.to_vec(), "step {step}");
        }
    }

    #[test]
    fn smuggling_shapes_are_poisoned_even_after_clean_requests() {
        let clean = b"POST /x HTTP/1.1\r\nContent-Length: 26\r\n\r\nContent-Length: 5\r\n\r\nabcde"
            .to_vec();
        assert!(
            !poisoned(&scan(&clean, 3)),
            "a body that looks like headers is a body"
        );
        let cases: &[&[u8]] = &[
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
            b"GET / HTTP/1.1\r\nX-A: a\nX-B: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\rX-B: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
        ];
        for case in cases {
            for step in [1, 5, case.len()] {
                let after_clean = [b"GET /ok HTTP/1.1\r\n\r\n".as_slice(), case].concat();
                let out = scan(&after_clean, step);
                assert!(poisoned(&out), "{}", String::from_utf8_lossy(case));
                assert!(out.starts_with(b"GET /ok HTTP/1.1\r\n\r\n"));
            }
        }
    }

    /// HTTP-shaped fragments, so that generated streams reach every state.
    fn fragments() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let fragment = prop_oneof![
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"POST /x HTTP/1.1\r\n".to_vec()),
            Just(b"Content-Length: 3\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Host: a\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"3\r\nabc\r\n".to_vec()),
            Just(b"0\r\n\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(fragment, 0..40).prop_map(|parts| parts.concat())
    }

    proptest::proptest! {
        /// Whatever the bytes and however they arrive: no panic, nothing
        /// lost or added, the same output for every chunking, and only
        /// the poison byte ever changes.
        #[test]
        fn any_bytes_any_chunking(input in fragments(), step in 1usize..64) {
            let run = |step: usize| {
                let mut scanner = Scanner::default();
                let mut out = Vec::new();
                for piece in input.chunks(step) {
                    scanner.feed(piece, &mut out);
                }
                // A partial head is held back until the stream ends.
                if scanner.state == State::Head {
                    out.extend_from_slice(&scanner.line);
                }
                out
            };
            let (pieces, whole) = (run(step), run(input.len().max(1)));
            proptest::prop_assert_eq!(pieces.len(), input.len());
            for (a, b) in pieces.iter().zip(&input) {
                proptest::prop_assert!(a == b || *a == POISON);
            }
            proptest::prop_assert_eq!(pieces, whole);
        }
    }
}
