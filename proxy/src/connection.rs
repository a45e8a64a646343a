//! The downstream connection loop: what happens on an accepted connection before and between
//! the requests pingora's proxy handles.
//!
//! What it owns:
//! - [`EdgeApp`]: what the edge's listeners ([`crate::listen`]) run on each connection.
//!   HTTP/2 (ALPN `h2`) goes to pingora's own loop with its stream in the same deadline
//!   wrapper (see below); an HTTP/1.x connection runs the same keep-alive loop pingora's
//!   would, with two differences: pipelining is on (RFC 9112 §9.3.2: pipelined
//!   requests are answered in order, pingora's default closes after the first), and each
//!   request head has a total deadline. Between requests (and until a head is complete)
//!   the connection waits in [`crate::idle`] with no pingora session allocated.
//! - [`HeadDeadline`]: the stream wrapper that enforces that deadline. Pingora only bounds
//!   each read of a request head (by the keep-alive timeout), so a client sending one
//!   header line every 20 s could hold a connection for as long as it liked (slowloris).
//!   The deadline runs from the accept for a connection's first request (on TLS from the
//!   end of the handshake, which [`crate::listen`] bounds by as long) and from the first
//!   byte for later ones (before it, the idle keep-alive timeout applies); it stops when
//!   pingora has parsed the head ([`head_complete`], called from `early_request_filter`).
//!   When it passes, the wrapper writes `408 Request Timeout` with `Connection: close`
//!   (through TLS on TLS connections) and fails the read, so pingora closes the connection;
//!   a connection that sent nothing at all is just closed.
//! - On HTTP/2 the wrapper finds the heads itself ([`H2Scan`]: frame headers only, nothing
//!   decoded), since the h2 library collects a header block (HEADERS plus CONTINUATION
//!   frames) for as long as the client takes: the deadline runs from the accept until the
//!   first header block is complete (preface included), and for later ones while a
//!   HEADERS/CONTINUATION frame sequence is incomplete. When it passes, the read fails and
//!   the connection is closed (RFC 9113 §5.4.1 lets an endpoint close without GOAWAY).
//! - On HTTP/2 the same wrapper batches the connection's writes ([`write_batch`]): the
//!   responses of the streams served together leave in one TLS write and one syscall.

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::tls::TlsRef;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType, ALPN,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::idle;
use h2_scan::H2Scan;
use plain_stream::PlainStream;
use write_batch::WriteBatch;

mod h2_scan;
pub mod plain_stream;
pub mod write_batch;
use crate::service::Edge;

/// What a 408 looks like on the wire: no body, and the connection ends with it.
const TIMEOUT_RESPONSE: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Where a connection is in its current request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Between requests: no deadline until the next request's first byte arrives.
    Idle = 0,
    /// Reading a head: the deadline runs.
    Head = 1,
    /// The head is parsed: body and response take as long as their own timeouts allow.
    Done = 2,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Done,
        }
    }
}

/// A downstream stream with a total deadline on each request head (see the module docs).
///
/// Cheap on the hot path: a head that arrives in one read (the usual case) never arms a
/// timer; the deadline is fixed and the timer polled only when a read of an unfinished head
/// has to wait, and the one timer of the connection is reused from request to request.
#[derive(Debug)]
pub struct HeadDeadline {
    inner: Stream,
    timeout: Duration,
    phase: AtomicU8,
    /// When the current head must be complete; `None` until a read of it had to wait
    /// (later requests) or from the accept (a connection's first request).
    deadline: Option<Instant>,
    /// Whether any byte of the current head has arrived.
    head_started: bool,
    /// The connection's timer, reset to each new deadline.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Once the deadline passed: how much of [`TIMEOUT_RESPONSE`] is written.
    expired: Option<usize>,
    /// HTTP/2: where the heads are (`None`: HTTP/1, heads end by [`head_complete`]). Boxed,
    /// as `batch`: an idle HTTP/1 connection holds this struct and need not carry them.
    h2: Option<Box<H2Scan>>,
    /// The writes, batched ([`write_batch`]): HTTP/2's frames, or on HTTP/1.1 over TLS a
    /// response's head and body; `None` on plain HTTP/1, whose hits the direct path writes
    /// whole and whose other responses go to the socket as pingora writes them.
    batch: Option<Box<WriteBatch>>,
}

impl HeadDeadline {
    /// Wrap a freshly accepted stream; the first request's deadline starts now.
    pub fn new(inner: Stream, timeout: Duration) -> Self {
        HeadDeadline {
            inner,
            timeout,
            phase: AtomicU8::new(Phase::Head as u8),
            deadline: Some(Instant::now() + timeout),
            head_started: false,
            sleep: None,
            expired: None,
            h2: None,
            batch: None,
        }
    }

    /// [`Self::new`] with writes gathered until each flush (HTTP/1.1 over TLS).
    pub fn new_batched(inner: Stream, timeout: Duration) -> Self {
        HeadDeadline {
            batch: Some(Box::new(WriteBatch::undeferred())),
            ..HeadDeadline::new(inner, timeout)
        }
    }

    /// Wrap a freshly accepted HTTP/2 stream; the first head's deadline starts now.
    pub fn new_h2(inner: Stream, timeout: Duration) -> Self {
        HeadDeadline {
            h2: Some(Box::new(H2Scan::new())),
            batch: Some(Box::default()),
            ..HeadDeadline::new(inner, timeout)
        }
    }

    /// HTTP/2 reads: the deadline follows [`H2Scan`]; once it passed, every read fails.
    fn poll_read_h2(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let timed_out = || {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request header timeout",
            )))
        };
        if self.expired.is_some() {
            return timed_out();
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        let Some(scan) = self.h2.as_mut() else {
            return read;
        };
        let was_in_head = scan.in_head();
        if let Poll::Ready(Ok(())) = &read {
            scan.feed(&buf.filled()[before..]);
        }
        let in_head = scan.in_head();
        if !in_head || !was_in_head {
            // No head, or a new one: its deadline is fixed when a read of it has to wait.
            self.deadline = None;
        }
        if read.is_pending() && in_head && self.poll_deadline(cx) {
            tracing::debug!(timeout = ?self.timeout, "HTTP/2 request header timeout");
            self.expired = Some(0);
            return timed_out();
        }
        read
    }

    /// The request is answered and the connection waits for the next one: no deadline
    /// until its first byte, and nothing held that the next request can make again (the
    /// head timer, a plain stream's socket digest), so an idle connection stays small.
    fn go_idle(&mut self) {
        self.set_phase(Phase::Idle);
        self.sleep = None;
        if let Some(plain) = self.inner.as_any().downcast_ref::<PlainStream>() {
            plain.release_digest();
        }
    }

    /// The wrapped stream (the socket the direct hit path writes to).
    pub fn inner(&self) -> &Stream {
        &self.inner
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Whether the deadline of the current head has passed; arms the timer to wake this
    /// task at it otherwise.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = *self
            .deadline
            .get_or_insert_with(|| Instant::now() + self.timeout);
        let sleep = match &mut self.sleep {
            Some(s) => {
                if s.deadline() != deadline {
                    s.as_mut().reset(deadline);
                }
                s
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx).is_ready()
    }

    /// The deadline passed: a client that sent part of a head gets the 408, then the read
    /// fails so pingora closes the connection; one that sent nothing at all is closed
    /// without a response (nginx does the same), as if it had hung up.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.head_started {
            return Poll::Ready(Ok(()));
        }
        let mut sent = self.expired.unwrap_or(0);
        while sent < TIMEOUT_RESPONSE.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &TIMEOUT_RESPONSE[sent..]) {
                Poll::Ready(Ok(0)) => break,
                Poll::Ready(Ok(n)) => {
                    sent += n;
                    self.expired = Some(sent);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if Pin::new(&mut self.inner).poll_flush(cx).is_pending() {
            return Poll::Pending;
        }
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request header timeout",
        )))
    }
}

/// Stop the head deadline of `session`'s connection: its request head has been parsed.
pub fn head_complete(session: &pingora::proxy::Session) {
    if let Some(guard) = session
        .as_downstream()
        .as_http1()
        .and_then(|h1| (**h1.stream()).as_any().downcast_ref::<HeadDeadline>())
    {
        guard.set_phase(Phase::Done);
    }
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.h2.is_some() {
            return this.poll_read_h2(cx, buf);
        }
        if this.expired.is_some() {
            return this.poll_expired(cx);
        }
        let phase = this.phase();
        if phase != Phase::Head {
            // Between heads: the next one starts with no deadline and no bytes.
            this.deadline = None;
            this.head_started = false;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        match (&read, phase) {
            (Poll::Ready(Ok(())), Phase::Idle | Phase::Head) if buf.filled().len() > before => {
                // Bytes of a head (for Idle: the next request's first ones).
                this.set_phase(Phase::Head);
                this.head_started = true;
            }
            (Poll::Pending, Phase::Head) if this.poll_deadline(cx) => {
                tracing::debug!(timeout = ?this.timeout, "request header timeout");
                this.expired = Some(0);
                return this.poll_expired(cx);
            }
            _ => {}
        }
        read
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.batch.as_mut() {
            Some(batch) => batch.poll_write(&mut this.inner, cx, &[io::IoSlice::new(buf)]),
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.batch.as_mut() {
            Some(batch) => batch.poll_write(&mut this.inner, cx, bufs),
            None => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        // A batch takes every slice of a vectored write at once.
        self.batch.is_some() || self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.batch.as_mut() {
            Some(batch) => batch.poll_flush(&mut this.inner, cx),
            None => Pin::new(&mut this.inner).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.batch.as_mut() {
            Some(batch) => batch.poll_shutdown(&mut this.inner, cx),
            None => Pin::new(&mut this.inner).poll_shutdown(cx),
        }
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        if let Some(batch) = self.batch.as_mut() {
            // Batched bytes go out before the stream closes; an error here is the peer's
            // end, which the shutdown below meets too.
            let inner = &mut self.inner;
            let _ = std::future::poll_fn(|cx| batch.poll_flush_now(inner, cx)).await;
        }
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: pingora::protocols::raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The edge's listening app: pingora's proxy behind the connection loop described in the
/// module docs. The plain-HTTP and the TLS listening services hold the same one (an `Arc`),
/// so either's `cleanup` stops the waiting connections of both.
pub struct EdgeApp {
    /// In an `Arc` of its own: pingora's HTTP/2 loop is a method on `&Arc<HttpProxy>`.
    proxy: Arc<HttpProxy<Edge>>,
    header_timeout: Duration,
    /// How long an HTTP/1.x connection may wait for its next request
    /// (`server.keepalive_timeout_secs`; HTTP/2's is pingora's `h2_idle_timeout`).
    keepalive: Duration,
    /// Wakes connections waiting for a head in [`idle::read_head`] at shutdown.
    closing: idle::Closing,
}

impl EdgeApp {
    /// `proxy` served with `header_timeout` as the deadline of each request head, and
    /// `keepalive` as the longest wait for the next one on an HTTP/1.x connection (the
    /// HTTP/2 idle timeout is `proxy`'s server options').
    pub fn new(proxy: HttpProxy<Edge>, header_timeout: Duration, keepalive: Duration) -> Self {
        EdgeApp {
            proxy: Arc::new(proxy),
            header_timeout,
            keepalive,
            closing: idle::Closing::default(),
        }
    }

    /// Serve an HTTP/1.x connection until it closes: the keep-alive loop of the module docs.
    ///
    /// The plain-HTTP listeners spawn this future as the connection's task (the TLS ones
    /// await it after the handshake, through [`Self::serve_tls`]), so what it holds
    /// between requests is what an idle connection costs: the stream, the settings pingora
    /// carries, and [`idle::read_head`]'s wait. The request itself runs in pingora's boxed
    /// future ([`Self::request`]), allocated per request and gone when it is answered.
    pub async fn serve_http1(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        let stream = Box::new(HeadDeadline::new(stream, self.header_timeout));
        self.serve_http1_on(stream, shutdown).await;
    }

    /// [`Self::serve_http1`] on a stream already in its deadline wrapper.
    async fn serve_http1_on(
        self: &Arc<Self>,
        mut stream: Box<HeadDeadline>,
        shutdown: &ShutdownWatch,
    ) {
        // `None` before the first request; afterwards what pingora carries to the next one.
        let mut carried: Option<Option<HttpPersistentSettings>> = None;
        loop {
            // Wait for the head here, with nothing but the socket and the bytes received
            // (see `crate::idle`), unless pingora already holds the next request's bytes.
            let pipelined = matches!(&carried, Some(Some(s)) if idle::carries_prefix(s));
            let head = if pipelined {
                None
            } else {
                // Shutdown closes only connections that have been answered (see `read_head`).
                let closing = carried.is_some().then_some(&self.closing);
                match idle::read_head(&mut *stream, self.keepalive, closing).await {
                    Some(head) => Some(head),
                    None => return,
                }
            };
            let Some(reused) = self.request(stream, carried, head, shutdown).await else {
                return;
            };
            let (next, settings) = reused.consume();
            // pingora hands back the stream it was given.
            let Ok(next) = next.into_any().downcast::<HeadDeadline>() else {
                tracing::debug!("session returned a stream of another type; closing");
                return;
            };
            stream = next;
            stream.go_idle();
            carried = Some(settings);
        }
    }

    /// pingora's future for one request on `stream`: a session set up with what the
    /// connection carried (`None`: its first request) and `head`, the request head bytes
    /// read ahead. A plain function returning pingora's own boxed future, so no session
    /// state is part of [`Self::serve_http1`]'s future (a local moved into an awaited call
    /// still takes space in the awaiting future).
    fn request<'a>(
        self: &'a Arc<Self>,
        stream: Box<HeadDeadline>,
        carried: Option<Option<HttpPersistentSettings>>,
        head: Option<BytesMut>,
        shutdown: &'a ShutdownWatch,
    ) -> Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'a>> {
        let mut session = ServerSession::new_http1(stream);
        match carried {
            None => {
                if *shutdown.borrow() {
                    session.set_keepalive(None);
                } else {
                    session.set_keepalive(Some(self.keepalive.as_secs()));
                }
                session.set_keepalive_reuses_remaining(
                    self.proxy
                        .server_options()
                        .and_then(|o| o.keepalive_request_limit),
                );
                // Carried to every later request on the connection by pingora's
                // persistent settings.
                session.set_pipelining_enabled(true);
            }
            Some(Some(settings)) => settings.apply_to_session(&mut session),
            Some(None) => {}
        }
        if let Some(head) = head {
            session.set_pipelined_prefix(head);
        }
        self.proxy.process_new_http(session, shutdown)
    }

    /// Serve a TLS connection whose handshake is done, until it closes: HTTP/2 (ALPN `h2`)
    /// by pingora's loop, which has its own framing and flow control, with the head
    /// deadline around its stream; anything else by [`Self::serve_http1`].
    pub async fn serve_tls(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) {
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let stream: Stream = Box::new(HeadDeadline::new_h2(stream, self.header_timeout));
            // pingora serves every stream of the connection and hands nothing back.
            let _ = ServerApp::process_new(&self.proxy, stream, shutdown).await;
            return;
        }
        let stream = Box::new(HeadDeadline::new_batched(stream, self.header_timeout));
        self.serve_http1_on(stream, shutdown).await;
    }

    /// The deadline of a request head (`server.request_header_timeout`); the TLS
    /// listeners give a handshake as long.
    pub fn header_timeout(&self) -> Duration {
        self.header_timeout
    }

    /// At shutdown: wake the connections waiting for a head, then pingora's cleanup.
    pub async fn cleanup(&self) {
        self.closing.close();
        self.proxy.http_cleanup().await;
    }
}
