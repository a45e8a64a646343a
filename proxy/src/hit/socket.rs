//! [`DirectSocket`]: the downstream socket of a plain-TCP HTTP/1.1 keep-alive session,
//! borrowed from that session, written by the edge itself (`sendmsg`, `sendfile`).
//!
//! Why a type: the socket belongs to the session's stream (a
//! [`crate::connection::plain_stream::PlainStream`]); a [`DirectSocket`] holds the exclusive
//! borrow of the [`Session`] for its whole life and reaches the socket through it, so the
//! socket cannot be closed or replaced while the type exists, and every syscall gets the
//! descriptor as a borrow of tokio's socket (no raw fd, no `unsafe`). It is only made for a
//! downstream whose response may go out this way (see [`DirectSocket::of`]); everything
//! else keeps pingora's write path.
//!
//! [`DirectSocket::send`] writes head and body, each syscall under tokio's readiness of that
//! socket (`try_io`: a full socket buffer clears it, and the send waits until the reactor
//! sees the socket writable again), giving up after [`STALL_TIMEOUT`] without progress.
//! Once any byte has gone out an error leaves the response truncated, so a failed send
//! marks the session not reusable: pingora closes the connection instead of writing a
//! second response on it.

use crate::connection::plain_stream::PlainStream;
use crate::connection::HeadDeadline;
use crate::storage::body_file::BodyFile;
use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockaddrStorage};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::io;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;
use tokio::io::Interest;
use tokio::net::TcpStream;

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
}

impl<'a> DirectSocket<'a> {
    /// The socket of `session`'s downstream if it is plain TCP speaking
    /// HTTP/1.1, the request body (if any) has been read to its end and the connection will
    /// be kept alive; the session back otherwise (TLS, HTTP/2, HTTP/1.0, `Connection:
    /// close`, an unread request body), which means "use pingora's normal write path".
    ///
    /// The unread body matters: a response sent before it ends must close the connection
    /// (the client may skip the body after a final response, RFC 9110 §10.1.1, and draining
    /// it later would eat the next request); pingora's writer does that, this type would not.
    pub fn of(session: &'a mut Session) -> Result<Self, &'a mut Session> {
        if plain_keepalive(session) {
            Ok(DirectSocket { session })
        } else {
            Err(session)
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
        let Some(tcp) = plain_socket(self.session) else {
            // `of` checked this; the borrow held since keeps it so.
            return Err((io::Error::other("downstream is not a plain socket"), 0));
        };
        let (mem, file): (&[u8], Option<&BodyFile>) = match body {
            Body::None => (&[], None),
            Body::Bytes(b) => (&b[..], None),
            Body::File(f) | Body::FileCopy(f) => (&[], Some(f)),
        };
        let mut progress = Progress {
            head,
            mem,
            file,
            copy: matches!(body, Body::FileCopy(_)),
            chunk: Vec::new(),
            chunk_sent: 0,
            sent_head: 0,
            sent_mem: 0,
            pos: file.map_or(0, |f| f.offset()),
        };
        loop {
            match tcp.try_io(Interest::WRITABLE, || progress.step(tcp)) {
                Ok(true) => continue,
                Ok(false) => return Ok(progress.written()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err((e, progress.written())),
            }
            match tokio::time::timeout(STALL_TIMEOUT, tcp.writable()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err((e, progress.written())),
                Err(_) => {
                    let e = io::Error::new(io::ErrorKind::TimedOut, "client stopped reading");
                    return Err((e, progress.written()));
                }
            }
        }
    }
}

/// Where a [`DirectSocket::send`] is: head bytes, then in-memory body bytes, then file body
/// bytes.
struct Progress<'b> {
    head: &'b [u8],
    mem: &'b [u8],
    file: Option<&'b BodyFile>,
    /// Copy mode ([`Body::FileCopy`]): the file bytes read but not yet sent are
    /// `chunk[chunk_sent..]`; a new chunk is read (at `pos`) only once the last one is all
    /// sent.
    copy: bool,
    chunk: Vec<u8>,
    chunk_sent: usize,
    sent_head: usize,
    sent_mem: usize,
    /// Offset in the file of the next body byte to send.
    pos: u64,
}

impl Progress<'_> {
    /// Bytes sent so far.
    fn written(&self) -> u64 {
        let file_start = self.file.map_or(0, |f| f.offset());
        (self.sent_head + self.sent_mem) as u64 + (self.pos - file_start)
    }

    /// One syscall's worth of sending: `Ok(true)` when bytes went out (or the call was
    /// interrupted), `Ok(false)` when everything is sent, `WouldBlock` when the socket
    /// buffer is full.
    fn step(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        let sent = if self.sent_head < self.head.len() || self.sent_mem < self.mem.len() {
            let mut flags = MsgFlags::MSG_NOSIGNAL;
            if self.file.is_some() {
                // Cork the head until the file body follows (nix has no MSG_MORE constant).
                flags |= MsgFlags::from_bits_retain(nix::libc::MSG_MORE);
            }
            let iov = [
                IoSlice::new(&self.head[self.sent_head..]),
                IoSlice::new(&self.mem[self.sent_mem..]),
            ];
            let no_addr: Option<&SockaddrStorage> = None;
            nix::sys::socket::sendmsg(tcp.as_raw_fd(), &iov, &[], flags, no_addr).map(|mut n| {
                let h = n.min(self.head.len() - self.sent_head);
                self.sent_head += h;
                n -= h;
                self.sent_mem += n;
            })
        } else {
            let Some(f) = self.file else {
                return Ok(false);
            };
            let file_end = f.offset() + f.len();
            if self.pos >= file_end {
                return Ok(false);
            }
            if self.copy {
                if self.chunk_sent == self.chunk.len() {
                    let n = usize::try_from((file_end - self.pos).min(COPY_CHUNK)).unwrap_or(0);
                    self.chunk.resize(n, 0);
                    let k =
                        std::os::unix::fs::FileExt::read_at(f.file(), &mut self.chunk, self.pos)?;
                    if k == 0 {
                        return Err(truncated());
                    }
                    self.chunk.truncate(k);
                    self.chunk_sent = 0;
                }
                nix::sys::socket::send(
                    tcp.as_raw_fd(),
                    &self.chunk[self.chunk_sent..],
                    MsgFlags::MSG_NOSIGNAL,
                )
                .map(|n| {
                    self.chunk_sent += n;
                    self.pos += n as u64;
                })
            } else {
                let mut off = i64::try_from(self.pos).map_err(io::Error::other)?;
                let count = usize::try_from((file_end - self.pos).min(MAX_SENDFILE_CHUNK))
                    .unwrap_or(1 << 30);
                match nix::sys::sendfile::sendfile(tcp.as_fd(), f.file(), Some(&mut off), count) {
                    Ok(0) => return Err(truncated()),
                    Ok(n) => {
                        self.pos += n as u64;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match sent {
            Ok(()) | Err(Errno::EINTR) => Ok(true),
            // EAGAIN becomes `WouldBlock`, which makes `try_io` clear the readiness.
            Err(e) => Err(e.into()),
        }
    }
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "cache file truncated")
}

/// The plain socket of `session`'s downstream HTTP/1 stream, if it has one.
fn plain_socket(session: &Session) -> Option<&TcpStream> {
    let h1 = session.as_downstream().as_http1()?;
    let mut stream: &dyn pingora::protocols::IO = &**h1.stream();
    // Plain HTTP/1 connections run inside the request head deadline wrapper.
    if let Some(guarded) = stream.as_any().downcast_ref::<HeadDeadline>() {
        stream = &**guarded.inner();
    }
    Some(stream.as_any().downcast_ref::<PlainStream>()?.tcp())
}

/// Whether `session`'s downstream meets the conditions of [`DirectSocket::of`].
fn plain_keepalive(session: &mut Session) -> bool {
    if session.req_header().version != http::Version::HTTP_11
        || !session.as_downstream_mut().is_body_done()
    {
        return false;
    }
    let will_keepalive = session
        .as_downstream()
        .as_http1()
        .is_some_and(|h1| h1.will_keepalive());
    will_keepalive && plain_socket(session).is_some()
}
