//! `Connection: close` on every HTTP/1 response sent before its request body was read to
//! its end.
//!
//! hyper closes an HTTP/1 connection whose request body was not read to its end: it cannot
//! tell where the next request starts without reading the rest. Unless the response says
//! `Connection: close`, a client that pools connections sends its next request into the
//! closing socket and that request fails (hyper's client reports `IncompleteMessage`).
//!
//! Bodies go unread in many places: a refused bearer token, an announced size over a limit,
//! a bad query or path parameter checked before the body, a route that never looks at it.
//! Rather than flag each early return by hand, [`close_if_unread`] wraps the whole router,
//! watches whether the body reached its end, and decides once, after the response is built.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

/// Middleware: adds `Connection: close` when an HTTP/1 request body that had something to
/// read was not read to its end by the time the response is ready.
///
/// Bodies known to be empty (a GET, `Content-Length: 0`) are left alone, so their
/// connections stay reusable. HTTP/2 is left alone too: there an unread body only resets its
/// own stream, and `Connection` is not a valid HTTP/2 header.
pub async fn close_if_unread(req: Request, next: Next) -> Response {
    let http1 = matches!(
        req.version(),
        Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
    );
    if !http1 || req.body().is_end_stream() {
        return next.run(req).await;
    }
    let ended = Arc::new(AtomicBool::new(false));
    let req = req.map(|inner| {
        Body::new(Watched {
            inner,
            ended: Arc::clone(&ended),
        })
    });
    let mut resp = next.run(req).await;
    // Checked once the handler is done with the request: none of our handlers reads the
    // request body while its response streams.
    if !ended.load(Ordering::Acquire) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request body that records, in `ended`, that its reader was given its end.
///
/// Only the final `None` counts, not `is_end_stream()` turning true after a frame: a reader
/// may refuse the frame that completes the body (axum's `to_bytes` errors at its limit on
/// that very frame), and whether the body's last bytes came in the same frame as the rest
/// depends on how TCP split them. Every reader here (`to_bytes`, the upload's data stream)
/// polls on to `None` when it accepts the whole body, so a body taken in full never loses
/// its keep-alive, and a refused one always says `close`, however it arrived.
struct Watched {
    inner: Body,
    ended: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.ended.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
