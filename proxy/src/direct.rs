//! Direct responses: a fresh memory-tier hit on a plain-TCP HTTP/1.1 keep-alive connection
//! is written to the socket by the edge itself, with a response head serialized once per
//! second per entry, and a large body sent with `sendfile(2)` from the entry's disk file.
//!
//! Why: on hot hits the edge's own work per request is small next to what it asks of the
//! kernel and of pingora's generic write path. `perf` on a 64 KiB hit put ~7.7 of the ~8.5
//! µs/request behind nginx in the kernel's copy of the body from user memory into socket
//! buffers (nginx sendfiles cached files); with sendfile the socket references page-cache
//! pages instead. For small hits the head (stored header + `Age`, `Date`, `Expires`, ...)
//! is rebuilt and serialized by pingora on every request; [`HeadCache`] does that once per
//! second and the head and body leave in one `sendmsg`.
//!
//! What it owns:
//! - [`BodyFile`]: an open entry file kept beside a memory entry, with the body's offset and
//!   length and the file identity (inode, length, mtime, ctime) it was verified at. At most
//!   `cache.memory.sendfile_max_open_files` are open at once (a process-wide count), so
//!   cached descriptors can never starve the listener of descriptors for new connections.
//! - [`HeadCache`]: per entry, the serialized 200 and 304 heads of the current second.
//! - [`downstream_fd`]: the socket of a plain-TCP HTTP/1.1 keep-alive downstream, or `None`
//!   for TLS, HTTP/2, HTTP/1.0, `Connection: close` or an unread request body, which keep
//!   pingora's write path.
//! - [`send_response`]: write head and body, waiting for writability through tokio when the
//!   socket buffer is full and giving up after [`STALL_TIMEOUT`] without progress.
//!
//! Integrity: sendfile cannot hash what it sends, so only a file whose identity (device,
//! inode, length, mtime, ctime; see [`Verified`]) equals one whose body was checked goes out
//! this way. A kept file was either written by this process (its body bytes are the ones
//! the memory entry holds) or verified against its sha256 when it was promoted; before each
//! send its identity is compared with the verified one (one `fstat`), and a file changed in
//! place (which moves ctime even when mtime is set back) is not used: the verified
//! in-memory bytes go out instead. A large disk-tier object is sent by sendfile only after
//! its body was hashed for exactly this identity (on first open, or by an earlier streamed
//! read that checked it); otherwise pingora's path streams it and hashes as it goes. What
//! is left is a write racing the send itself, which only reading the bytes could catch.
//!
//! Failure: once any byte has gone out, an error leaves the response truncated; the caller
//! must then close the connection (not write a second response on it).

// The one place the edge touches raw descriptors: pingora exposes the downstream socket
// only as a `RawFd`, sendfile needs it as a borrowed fd, and tokio's registration of a
// descriptor is `unsafe`. See the two SAFETY comments below.
#![allow(unsafe_code)]

use crate::connection::HeadDeadline;
use crate::eviction::{identity, Verified};
use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use nix::sys::socket::SockaddrStorage;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::proxy::Session;
use std::fs::File;
use std::io;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Open [`BodyFile`]s in this process.
static OPEN_FILES: AtomicUsize = AtomicUsize::new(0);

/// How long a send may make no progress (socket buffer full, client not reading) before the
/// connection is given up. Progress resets it, so slow but live clients are not cut off.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Largest count passed to one sendfile call (Linux caps a call at 0x7ffff000 bytes).
const MAX_SENDFILE_CHUNK: u64 = 0x7fff_f000;

/// An entry file held open for zero-copy sends. Dropping it closes the file and frees its
/// slot in the process-wide count.
#[derive(Debug)]
pub struct BodyFile {
    file: File,
    offset: u64,
    len: u64,
    id: Verified,
    /// Counted in [`OPEN_FILES`] (kept beside a memory entry) or not (one request's file).
    counted: bool,
}

impl BodyFile {
    /// Keep `file` (whose body of `len` bytes starts at `offset`) for zero-copy sends, if a
    /// slot is free under `max_open`. `file` must be readable and its body already verified
    /// (or written by us); its current identity is recorded as the verified one.
    pub fn new(file: File, offset: u64, len: u64, max_open: usize) -> Option<Self> {
        let mut kept = Self::for_one_response(file, offset, len)?;
        OPEN_FILES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max_open).then_some(n + 1)
            })
            .ok()?;
        kept.counted = true;
        Some(kept)
    }

    /// `file` (already verified, body of `len` bytes at `offset`) for one response only: not
    /// counted against the open-file budget, closed when the response is done. `None` when
    /// the file is shorter than the body.
    pub fn for_one_response(file: File, offset: u64, len: u64) -> Option<Self> {
        let id = identity(&file).ok()?;
        if id.len < offset.checked_add(len)? {
            return None;
        }
        Some(BodyFile {
            file,
            offset,
            len,
            id,
            counted: false,
        })
    }

    /// Body length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false for a kept file (empty bodies are not worth a descriptor); for clippy.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the file still has the identity it was verified at (one `fstat`). A file
    /// written in place gets a new ctime (even if its mtime is set back), so its bytes are
    /// not trusted any more.
    pub fn unchanged(&self) -> bool {
        identity(&self.file).is_ok_and(|id| id == self.id)
    }

    /// Whether the identity recorded for this file is `id` (the one a check was done for).
    pub fn identity_is(&self, id: &Verified) -> bool {
        self.id == *id
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        if self.counted {
            OPEN_FILES.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Which head of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadKind {
    /// `200 OK` with the stored headers (GET and HEAD share it).
    Ok,
    /// `304 Not Modified` for a matching conditional request.
    NotModified,
}

#[derive(Debug, Default)]
struct Heads {
    second: u64,
    ok: Option<Bytes>,
    not_modified: Option<Bytes>,
}

/// Serialized response heads of one memory entry for the current Unix second. `Age`, `Date`
/// and `Expires` only change from one second to the next, so within a second every hit of
/// the entry sends the same bytes.
#[derive(Debug, Default)]
pub struct HeadCache {
    heads: Mutex<Heads>,
}

impl HeadCache {
    /// The `kind` head for the Unix second of `now`, built by `build` at most once per
    /// second. `None` when `build` fails (the caller then uses pingora's write path).
    pub fn get(
        &self,
        kind: HeadKind,
        now: SystemTime,
        build: impl FnOnce() -> Option<Bytes>,
    ) -> Option<Bytes> {
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // A poisoned lock only means a builder panicked; the cached bytes are still whole.
        let mut h = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        if h.second != second {
            *h = Heads {
                second,
                ..Heads::default()
            };
        }
        let slot = match kind {
            HeadKind::Ok => &mut h.ok,
            HeadKind::NotModified => &mut h.not_modified,
        };
        if slot.is_none() {
            *slot = Some(build()?);
        }
        slot.clone()
    }
}

/// What follows the head.
pub enum Body<'a> {
    /// No body (HEAD, 304).
    None,
    /// In-memory bytes, sent with the head in one `sendmsg` (copied by the kernel).
    Bytes(&'a Bytes),
    /// The body of a kept entry file, sent with sendfile (no copy).
    File(&'a BodyFile),
}

impl Body<'_> {
    /// Body bytes this sends.
    pub fn size(&self) -> u64 {
        match self {
            Body::None => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::File(f) => f.len(),
        }
    }
}

/// Number of [`BodyFile`]s open now (for metrics and tests).
pub fn open_files() -> usize {
    OPEN_FILES.load(Ordering::Acquire)
}

/// The socket of `session`'s downstream if it is plain TCP (or a Unix socket) speaking
/// HTTP/1.1, the request body (if any) has been read to its end and the connection will be
/// kept alive; `None` otherwise (TLS, HTTP/2, HTTP/1.0, `Connection: close`, an unread
/// request body), which means "use pingora's normal write path".
///
/// The unread body matters: a response sent before it ends must close the connection (the
/// client may skip the body after a final response, RFC 9110 §10.1.1, and draining it later
/// would eat the next request); pingora's writer does that, the direct path would not.
pub fn downstream_fd(session: &mut Session) -> Option<RawFd> {
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

/// Write `head` (a serialized HTTP/1.1 response head) and then `body` to the socket `fd`.
/// Returns the number of bytes written in total, or the error together with the number
/// written before it (non-zero means the response is truncated on the wire).
///
/// The caller must hold the session that owns `fd` for the whole call.
pub async fn send_response(
    fd: RawFd,
    head: &[u8],
    body: Body<'_>,
) -> Result<u64, (io::Error, u64)> {
    // SAFETY: `fd` is the downstream socket of the pingora session the caller borrows for
    // the whole call (see `downstream_fd`), so it stays open and refers to the same socket
    // until this future completes or is dropped; the borrow never outlives it.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let (mem, file): (&[u8], Option<&BodyFile>) = match body {
        Body::None => (&[], None),
        Body::Bytes(b) => (&b[..], None),
        Body::File(f) => (&[], Some(f)),
    };
    // Progress: head bytes, then in-memory body bytes, then file body bytes.
    let mut sent_head = 0usize;
    let mut sent_mem = 0usize;
    let (file_start, file_end) = file.map_or((0, 0), |f| (f.offset, f.offset + f.len));
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
            nix::sys::socket::sendmsg(fd, &iov, &[], flags, no_addr).map(|mut n| {
                let h = n.min(head.len() - sent_head);
                sent_head += h;
                n -= h;
                sent_mem += n;
            })
        } else if let (Some(f), true) = (file, pos < file_end) {
            let mut off = i64::try_from(pos)
                .map_err(|e| (io::Error::other(e), written(sent_head, sent_mem, pos)))?;
            let count =
                usize::try_from((file_end - pos).min(MAX_SENDFILE_CHUNK)).unwrap_or(1 << 30);
            match nix::sys::sendfile::sendfile(sock, &f.file, Some(&mut off), count) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "cache file truncated");
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
                let registered = nix::unistd::dup(sock)
                    .map_err(io::Error::from)
                    .and_then(|dup| {
                        // SAFETY: `dup` is an `OwnedFd` moved into the `AsyncFd`, so it stays
                        // open and names the same file description for the AsyncFd's life.
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
