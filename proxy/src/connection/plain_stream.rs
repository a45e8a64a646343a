//! [`PlainStream`]: the stream of an accepted plain-TCP connection, as pingora's sessions take
//! it (`Box<dyn IO>`), holding the socket and little else.
//!
//! Why not pingora's L4 `Stream`: it is 384 bytes (buffer slot, rewind buffers, proxy and
//! socket digests, pending-time counters, tracer) for as long as the connection lives, and
//! the socket digest it is given (392 bytes) lives as long. A keep-alive connection waiting
//! for its next request needs none of it. Here the digest is made when a session first asks
//! for it (pingora does once per request, for the client address in logs and metrics) and
//! let go when the connection goes idle ([`PlainStream::release_digest`]), so an idle
//! connection holds the socket, its peer address and its accept time.
//!
//! Reads and writes go straight to tokio's socket: no buffering (pingora's own plain
//! listeners buffer nothing on reads either, and the edge's direct hit path writes to the
//! socket itself, [`crate::hit`]).

use async_trait::async_trait;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, Ssl, UniqueID, UniqueIDType,
};
use pingora::protocols::{SocketDigest, TimingDigest};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// An accepted plain-TCP connection (see the module docs).
#[derive(Debug)]
pub struct PlainStream {
    tcp: TcpStream,
    /// The client's address, as `accept` gave it.
    peer: SocketAddr,
    /// When the connection was accepted (pingora's timing digest).
    established: SystemTime,
    /// The socket digest of the current request's session; `None` while no session has
    /// asked for it since the connection last went idle.
    digest: Mutex<Option<Arc<SocketDigest>>>,
}

impl PlainStream {
    /// The stream of `tcp`, accepted from `peer` just now.
    pub fn new(tcp: TcpStream, peer: SocketAddr) -> Self {
        PlainStream {
            tcp,
            peer,
            established: SystemTime::now(),
            digest: Mutex::new(None),
        }
    }

    /// The address the connection was accepted from.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The socket (the direct hit path writes to it, [`crate::hit`]).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Drop this stream's hold on the socket digest: the connection waits for its next
    /// request, and the digest is made again when that request's session asks for it.
    pub fn release_digest(&self) {
        *self.digest.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl AsyncRead for PlainStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PlainStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for PlainStream {
    async fn shutdown(&mut self) {
        // As pingora's stream: a failed shutdown is the peer having gone already.
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.tcp).await {
            tracing::debug!(error = %e, "failed to shut down connection");
        }
    }
}

impl UniqueID for PlainStream {
    fn id(&self) -> UniqueIDType {
        self.tcp.as_raw_fd()
    }
}

impl Ssl for PlainStream {}

impl GetTimingDigest for PlainStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            establishment_duration: None,
            offload_wait_duration: None,
        })]
    }
}

impl GetProxyDigest for PlainStream {
    fn get_proxy_digest(&self) -> Option<Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for PlainStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        let mut slot = self.digest.lock().unwrap_or_else(PoisonError::into_inner);
        let digest = slot.get_or_insert_with(|| {
            let digest = SocketDigest::from_raw_fd(self.tcp.as_raw_fd());
            // A new digest's cell is empty, so this cannot fail.
            let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(self.peer)));
            Arc::new(digest)
        });
        Some(digest.clone())
    }
}

impl Peek for PlainStream {}
