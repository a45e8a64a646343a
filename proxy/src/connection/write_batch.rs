//! Write batching for TLS downstreams: many small frames (HTTP/2) or a response's head and
//! body (HTTP/1.1), one TLS record and one syscall.
//!
//! The h2 library flushes its socket once per DATA frame it holds by reference (any frame of
//! 256 bytes or more): it keeps one such frame at a time and must write it out before it can
//! take the next. Below it, each flush is a TLS record, a `sendto` and a pass through the
//! loopback or NIC stack. With 16 connections x 10 streams of 1 KiB hits that was one
//! `sendto` per response (46,680 for 50,000 responses) and a quarter of the edge's core in
//! `tcp_sendmsg`; nginx writes the responses of one read of requests together.
//!
//! [`WriteBatch`] sits between h2 and the TLS stream. Writes below [`LIMIT`] are copied into
//! one buffer; a flush right after writes is *deferred*: it returns ready, wakes the task and
//! leaves the bytes buffered, so the other streams' tasks that are already queued add their
//! frames first. The connection task polls again (h2 flushes on every poll of its
//! connection), finds no new writes and flushes for real: one large write to TLS (full
//! 16 KiB records) and one flush of the socket.
//!
//! On HTTP/1.1 over TLS ([`WriteBatch::undeferred`]) flushes are never deferred: pingora
//! writes a response's head and its body, then flushes once, and the batch makes those one
//! TLS record and one `write` (through rustls straight to the socket, each `write_all` was
//! a record and a syscall of its own).
//!
//! Bounds (why this never holds bytes back for long): at most [`MAX_DEFERRED`] deferrals in
//! a row, each one scheduler round; at most [`LIMIT`] bytes buffered (reaching it writes
//! them through); a write of [`LIMIT`] bytes or more goes straight through; shutdown writes
//! everything first. The buffer is released when a real flush empties it, so an idle
//! connection holds none.
//!
//! Contract for the owner: bytes accepted by `poll_write` reach `inner` no later than the
//! next real flush or shutdown; dropping the batch with bytes buffered loses them, as
//! dropping any buffered writer does (h2 flushes and shuts down before it drops the socket).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::AsyncWrite;

/// Bytes buffered before they are written through (bytes): four full-size (16 KiB) DATA
/// frames with their 9-byte headers and room for small frames, so a 1 MiB response goes to
/// TLS in 64 KiB writes and a batch of small responses in one.
pub const LIMIT: usize = 68 * 1024;

/// Flushes deferred in a row before one is done for real (count). Each deferral lets the
/// tasks already queued run once; under steady load the limit keeps a response from
/// waiting on more than a few rounds of its neighbours.
pub const MAX_DEFERRED: u8 = 4;

/// The buffer and flush state of one connection's writes (see the module docs).
#[derive(Debug)]
pub struct WriteBatch {
    /// Bytes accepted and not yet written to the inner stream (empty, no allocation, when
    /// idle).
    buf: Vec<u8>,
    /// How much of `buf` the inner stream already took (bytes).
    sent: usize,
    /// Whether anything was written since the last flush.
    wrote: bool,
    /// Flushes deferred in a row.
    deferred: u8,
    /// Flushes deferred in a row at most: [`MAX_DEFERRED`] for HTTP/2, 0 for HTTP/1.1.
    max_deferred: u8,
}

impl Default for WriteBatch {
    /// The HTTP/2 batch: flushes deferred (see the module docs).
    fn default() -> Self {
        WriteBatch {
            buf: Vec::new(),
            sent: 0,
            wrote: false,
            deferred: 0,
            max_deferred: MAX_DEFERRED,
        }
    }
}

impl WriteBatch {
    /// The HTTP/1.1 batch: writes gathered until the next flush, which is done at once.
    pub fn undeferred() -> Self {
        WriteBatch {
            max_deferred: 0,
            ..WriteBatch::default()
        }
    }

    /// Bytes accepted and not yet written to the inner stream.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Accept `bufs` (all of them or, written through, what `inner` takes).
    pub fn poll_write<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if self.buffered() + len > LIMIT {
            ready!(self.poll_drain(inner, cx))?;
        }
        self.wrote = true;
        if len >= LIMIT {
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
        if self.buf.capacity() == 0 && self.max_deferred > 0 {
            // HTTP/2: room for the frames of many streams at once. HTTP/1.1 gathers a head
            // and a body: the buffer grows to what they need.
            self.buf.reserve_exact(LIMIT);
        }
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    /// Flush: deferred right after writes (see the module docs), else everything buffered
    /// is written and `inner` flushed.
    pub fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.wrote && self.deferred < self.max_deferred {
            self.wrote = false;
            self.deferred += 1;
            // The owner's task runs again after the tasks already queued; its next flush
            // (with no writes in between) is a real one.
            cx.waker().wake_by_ref();
            return Poll::Ready(Ok(()));
        }
        self.poll_flush_now(inner, cx)
    }

    /// Flush for real, never deferred: everything buffered is written and `inner` flushed.
    pub fn poll_flush_now<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(inner, cx))?;
        ready!(Pin::new(inner).poll_flush(cx))?;
        self.wrote = false;
        self.deferred = 0;
        // Nothing kept while the connection waits.
        self.buf = Vec::new();
        Poll::Ready(Ok(()))
    }

    /// Write and flush everything buffered, then shut `inner` down.
    pub fn poll_shutdown<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_flush_now(inner, cx))?;
        Pin::new(inner).poll_shutdown(cx)
    }

    /// Write the buffered bytes to `inner` (no flush).
    fn poll_drain<W: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut *inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// An inner stream that records what reaches it; takes at most `max_write` per call.
    #[derive(Default)]
    struct Recorder {
        bytes: Vec<u8>,
        writes: usize,
        flushes: usize,
        shut: bool,
        max_write: Option<usize>,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = self.max_write.map_or(buf.len(), |m| m.min(buf.len()));
            self.bytes.extend_from_slice(&buf[..n]);
            self.writes += 1;
            Poll::Ready(Ok(n))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.shut = true;
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct CountWakes(AtomicUsize);
    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn write(b: &mut WriteBatch, w: &mut Recorder, cx: &mut Context<'_>, data: &[u8]) {
        let got = b.poll_write(w, cx, &[IoSlice::new(data)]);
        assert!(matches!(got, Poll::Ready(Ok(n)) if n == data.len()));
    }

    fn flush(b: &mut WriteBatch, w: &mut Recorder, cx: &mut Context<'_>) {
        assert!(matches!(b.poll_flush(w, cx), Poll::Ready(Ok(()))));
    }

    #[test]
    fn frames_flushed_one_by_one_reach_the_stream_in_one_write_on_the_idle_flush() {
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut b, mut w) = (WriteBatch::default(), Recorder::default());
        let mut expect = Vec::new();
        // What h2 does: a flush after each frame it holds by reference. Each of these
        // follows a write, so the first MAX_DEFERRED are deferred and the next is real.
        for i in 0..MAX_DEFERRED {
            let frame = vec![i; 1033];
            write(&mut b, &mut w, &mut cx, &frame);
            expect.extend_from_slice(&frame);
            flush(&mut b, &mut w, &mut cx);
        }
        assert_eq!(
            w.writes, 0,
            "nothing written while the flushes were deferred"
        );
        assert_eq!(wakes.0.load(Ordering::SeqCst), usize::from(MAX_DEFERRED));
        write(&mut b, &mut w, &mut cx, b"last");
        expect.extend_from_slice(b"last");
        flush(&mut b, &mut w, &mut cx);
        assert_eq!(b.buffered(), 0, "the flush past the bound was a real one");
        assert_eq!(wakes.0.load(Ordering::SeqCst), usize::from(MAX_DEFERRED));
        // ... and it wrote all of it at once.
        assert_eq!(
            (w.bytes.as_slice(), w.writes, w.flushes),
            (expect.as_slice(), 1, 1)
        );

        // A new batch: writes, a deferred flush, then the idle flush of the next poll.
        write(&mut b, &mut w, &mut cx, b"tail");
        flush(&mut b, &mut w, &mut cx);
        assert_eq!((w.writes, w.flushes, b.buffered()), (1, 1, 4));
        flush(&mut b, &mut w, &mut cx);
        assert_eq!((w.writes, w.flushes, b.buffered()), (2, 2, 0));
        assert!(w.bytes.ends_with(b"tail"));
        assert_eq!(b.buf.capacity(), 0, "an idle connection holds no buffer");
    }

    #[test]
    fn http1_head_and_body_leave_in_one_write_at_the_flush_never_deferred() {
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut b, mut w) = (WriteBatch::undeferred(), Recorder::default());
        // What pingora's HTTP/1 session does: the head, the body, one flush.
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n".to_vec();
        let body = vec![7u8; 1024];
        write(&mut b, &mut w, &mut cx, &head);
        write(&mut b, &mut w, &mut cx, &body);
        assert_eq!(w.writes, 0, "gathered until the flush");
        flush(&mut b, &mut w, &mut cx);
        assert_eq!((w.writes, w.flushes, b.buffered()), (1, 1, 0));
        assert_eq!(w.bytes, [head, body].concat());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "no flush deferred");
        assert_eq!(b.buf.capacity(), 0, "an idle connection holds no buffer");
    }

    #[test]
    fn the_buffer_is_written_through_at_the_limit_and_large_writes_pass_straight() {
        let waker = Waker::from(Arc::new(CountWakes::default()));
        let mut cx = Context::from_waker(&waker);
        let (mut b, mut w) = (WriteBatch::default(), Recorder::default());
        let frame = vec![7u8; 16 * 1024 + 9];
        for _ in 0..4 {
            write(&mut b, &mut w, &mut cx, &frame);
        }
        assert_eq!((w.writes, b.buffered()), (0, 4 * frame.len()));
        assert!(b.buffered() <= LIMIT);
        write(&mut b, &mut w, &mut cx, &frame);
        assert_eq!(
            w.writes, 1,
            "the full buffer went out before the fifth frame"
        );
        assert_eq!(
            (w.bytes.len(), b.buffered()),
            (4 * frame.len(), frame.len())
        );

        let big = vec![1u8; LIMIT];
        write(&mut b, &mut w, &mut cx, &big);
        assert_eq!(b.buffered(), 0);
        assert_eq!(w.bytes.len(), 5 * frame.len() + LIMIT);
        assert_eq!(w.flushes, 0, "writing through is not flushing");
    }

    #[test]
    fn partial_writes_of_the_inner_stream_lose_nothing_and_shutdown_drains() {
        let waker = Waker::from(Arc::new(CountWakes::default()));
        let mut cx = Context::from_waker(&waker);
        let mut b = WriteBatch::default();
        let mut w = Recorder {
            max_write: Some(100),
            ..Recorder::default()
        };
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        write(&mut b, &mut w, &mut cx, &data);
        assert!(matches!(
            b.poll_shutdown(&mut w, &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(w.bytes, data);
        assert!(w.shut);
        assert_eq!(w.writes, 50);
    }
}
