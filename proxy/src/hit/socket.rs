//! [`DirectSocket`]: the downstream socket of a plain-TCP HTTP/1.1 keep-alive session,
//! borrowed from that session, written by the edge itself (`sendmsg`, `sendfile`).
//!
//! Why a type: pingora exposes the socket only as a `RawFd`, sendfile needs it as a borrowed
//! fd, and tokio's registration of a descriptor is `unsafe`. A [`DirectSocket`] holds the
//! exclusive borrow of the [`Session`] that owns the socket for its whole life, so the fd
//! cannot be closed or replaced while the type exists; no raw fd leaves this module. It is
//! only made for a downstream whose response may go out this way (see
//! [`DirectSocket::of`]); everything else keeps pingora's write path.
//!
//! [`DirectSocket::send`] writes head and body, waiting for writability through tokio when
//! the socket buffer is full and giving up after [`STALL_TIMEOUT`] without progress. Once
//! any byte has gone out an error leaves the response truncated, so a failed send marks the
//! session not reusable: pingora closes the connection instead of writing a second
//! response on it.

// The one place the edge touches raw descriptors; see the two SAFETY comments below.
#![allow(unsafe_code)]

use crate::connection::HeadDeadline;
use crate::storage::body_file::BodyFile;
use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockaddrStorage};
use pingora::http::RequestHeader;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::proxy::Session;
use std::io;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// How long a send may make no progress (socket buffer full, client not reading) before the
/// connection is given up. Progress resets it, so slow but live clients are not cut off.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest count passed to one sendfile call (Linux caps a call at 0x7ffff000 bytes).
const MAX_SENDFILE_CHUNK: u64 = 0x7fff_f000;

/// Bytes read from the file per step when a file body is copied ([`Body::FileCopy`]): the
/// disk tier's default chunk, large enough that the copy costs one read and one send per
/// 256 KiB.
const COPY_CHUNK: u64 = 256 << 10;

/// What follows the head.
pub enum Body<'a> {
    /// No body (HEAD, 304).
    None,
    /// In-memory bytes, sent with the head in one `sendmsg` (copied by the kernel).
    Bytes(&'a Bytes),
    /// The body of a kept entry file, sent with sendfile (no copy).
    File(&'a BodyFile),
    /// The body of an entry file, read in [`COPY_CHUNK`] steps and copied into the socket:
    /// for bodies above `cache.memory.sendfile_max_size` (see [`crate::hit`]).
    FileCopy(&'a BodyFile),
}

impl Body<'_> {
    /// Body bytes this sends.
    pub fn size(&self) -> u64 {
        match self {
            Body::None => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(f) | Body::FileCopy(f) => f.len(),
        }
    }
}

/// The downstream socket of a session whose response the edge writes itself (see the
/// module docs). Holds the session's exclusive borrow for `'a`.
pub struct DirectSocket<'a> {
    session: &'a mut Session,
    /// The socket of `session`'s L4 stream; open for as long as `session` is borrowed.
    fd: RawFd,
}

impl<'a> DirectSocket<'a> {
    /// The socket of `session`'s downstream if it is plain TCP (or a Unix socket) speaking
    /// HTTP/1.1, the request body (if any) has been read to its end and the connection will
    /// be kept alive; the session back otherwise (TLS, HTTP/2, HTTP/1.0, `Connection:
    /// close`, an unread request body), which means "use pingora's normal write path".
    ///
    /// The unread body matters: a response sent before it ends must close the connection
    /// (the client may skip the body after a final response, RFC 9110 §10.1.1, and draining
    /// it later would eat the next request); pingora's writer does that, this type would not.
    pub fn of(session: &'a mut Session) -> Result<Self, &'a mut Session> {
        match plain_keepalive_fd(session) {
            Some(fd) => Ok(DirectSocket { session, fd }),
            None => Err(session),
        }
    }

    /// The request this socket answers.
    pub fn request(&self) -> &RequestHeader {
        self.session.req_header()
    }

    /// Write `head` (a serialized HTTP/1.1 response head) and then `body`. Returns the
    /// number of bytes written in total, or the error together with the number written
    /// before it (non-zero means the response is truncated on the wire). After an error the
    /// session is marked not reusable, so pingora closes the connection.
    pub async fn send(&mut self, head: &[u8], body: Body<'_>) -> Result<u64, (io::Error, u64)> {
        let sent = self.send_inner(head, body).await;
        if sent.is_err() {
            self.session.set_keepalive(None);
        }
        sent
    }

    async fn send_inner(&self, head: &[u8], body: Body<'_>) -> Result<u64, (io::Error, u64)> {
        // SAFETY: `self.fd` is the socket of the L4 stream owned by the session `self`
        // borrows exclusively for `'a` (see `plain_keepalive_fd`). Nothing can drop or
        // replace that stream while the borrow lasts (this type never does), so the fd stays
        // open and names the same socket for as long as `sock` (which borrows `self`) lives.
        let sock = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let (mem, file): (&[u8], Option<&BodyFile>) = match body {
            Body::None => (&[], None),
            Body::Bytes(b) => (&b[..], None),
            Body::File(f) | Body::FileCopy(f) => (&[], Some(f)),
        };
        let copy = matches!(body, Body::FileCopy(_));
        // Copy mode: the file bytes read but not yet sent are `chunk[chunk_sent..]`; a new
        // chunk is read (at `pos`) only once the last one is all sent.
        let mut chunk: Vec<u8> = Vec::new();
        let mut chunk_sent = 0usize;
        // Progress: head bytes, then in-memory body bytes, then file body bytes.
        let mut sent_head = 0usize;
        let mut sent_mem = 0usize;
        let (file_start, file_end) = file.map_or((0, 0), |f| (f.offset(), f.offset() + f.len()));
        let mut pos = file_start;
        // Registered with tokio's reactor only if the socket buffer fills up: a dup of the
        // socket, because the original fd is already registered by pingora's stream.
        let mut waiter: Option<AsyncFd<OwnedFd>> = None;
        let written = |sent_head: usize, sent_mem: usize, pos: u64| {
            (sent_head + sent_mem) as u64 + (pos - file_start)
        };
        let no_addr: Option<&SockaddrStorage> = None;
        loop {
            let step = if sent_head < head.len() || sent_mem < mem.len() {
                let mut flags = MsgFlags::MSG_NOSIGNAL;
                if file.is_some() {
                    // Cork the head until the file body follows (nix has no MSG_MORE constant).
                    flags |= MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
                }
                let iov = [
                    IoSlice::new(&head[sent_head..]),
                    IoSlice::new(&mem[sent_mem..]),
                ];
                nix::sys::socket::sendmsg(sock.as_raw_fd(), &iov, &[], flags, no_addr).map(
                    |mut n| {
                        let h = n.min(head.len() - sent_head);
                        sent_head += h;
                        n -= h;
                        sent_mem += n;
                    },
                )
            } else if let (Some(f), true, true) = (file, pos < file_end, copy) {
                if chunk_sent == chunk.len() {
                    let n = usize::try_from((file_end - pos).min(COPY_CHUNK)).unwrap_or(0);
                    chunk.resize(n, 0);
                    match std::os::unix::fs::FileExt::read_at(f.file(), &mut chunk, pos) {
                        Ok(0) => {
                            let e = io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "cache file truncated",
                            );
                            return Err((e, written(sent_head, sent_mem, pos)));
                        }
                        Ok(k) => {
                            chunk.truncate(k);
                            chunk_sent = 0;
                        }
                        Err(e) => return Err((e, written(sent_head, sent_mem, pos))),
                    }
                }
                nix::sys::socket::send(
                    sock.as_raw_fd(),
                    &chunk[chunk_sent..],
                    MsgFlags::MSG_NOSIGNAL,
                )
                .map(|n| {
                    chunk_sent += n;
                    pos += n as u64;
                })
            } else if let (Some(f), true) = (file, pos < file_end) {
                let mut off = i64::try_from(pos)
                    .map_err(|e| (io::Error::other(e), written(sent_head, sent_mem, pos)))?;
                let count =
                    usize::try_from((file_end - pos).min(MAX_SENDFILE_CHUNK)).unwrap_or(1 << 30);
                match nix::sys::sendfile::sendfile(sock, f.file(), Some(&mut off), count) {
                    Ok(0) => {
                        let e =
                            io::Error::new(io::ErrorKind::UnexpectedEof, "cache file truncated");
                        return Err((e, written(sent_head, sent_mem, pos)));
                    }
                    Ok(n) => {
                        pos += n as u64;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            } else {
                return Ok(written(sent_head, sent_mem, pos));
            };
            match step {
                Ok(()) | Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err((e.into(), written(sent_head, sent_mem, pos))),
            }
            let w = match &waiter {
                Some(w) => w,
                None => {
                    let registered =
                        nix::unistd::dup(sock)
                            .map_err(io::Error::from)
                            .and_then(|dup| {
                                // SAFETY: `dup` is an `OwnedFd` moved into the `AsyncFd`, so it
                                // stays open and names the same file description for the
                                // AsyncFd's life.
                                unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }
                                    .map_err(|e| e.into_parts().1)
                            });
                    match registered {
                        Ok(w) => waiter.insert(w),
                        Err(e) => return Err((e, written(sent_head, sent_mem, pos))),
                    }
                }
            };
            match tokio::time::timeout(STALL_TIMEOUT, w.writable()).await {
                Ok(Ok(mut guard)) => guard.clear_ready(),
                Ok(Err(e)) => return Err((e, written(sent_head, sent_mem, pos))),
                Err(_) => {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "client stopped reading");
                    return Err((e, written(sent_head, sent_mem, pos)));
                }
            }
        }
    }
}

/// The socket of `session`'s downstream under the conditions of [`DirectSocket::of`].
fn plain_keepalive_fd(session: &mut Session) -> Option<RawFd> {
    if session.req_header().version != http::Version::HTTP_11
        || !session.as_downstream_mut().is_body_done()
    {
        return None;
    }
    let h1 = session.as_downstream().as_http1()?;
    if !h1.will_keepalive() {
        return None;
    }
    let mut stream: &dyn pingora::protocols::IO = &**h1.stream();
    // Plain HTTP/1 connections run inside the request head deadline wrapper.
    if let Some(guarded) = stream.as_any().downcast_ref::<HeadDeadline>() {
        stream = &**guarded.inner();
    }
    let l4 = stream.as_any().downcast_ref::<L4Stream>()?;
    let fd = l4.as_raw_fd();
    (fd >= 0).then_some(fd)
}
