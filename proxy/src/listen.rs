//! The edge's listening service: its own accept loops for `server.listen` (plain HTTP) and
//! `server.tls_listen` (HTTPS: HTTP/2 and HTTP/1.1 by ALPN).
//!
//! Why not pingora's: pingora's listening service spawns one task per accepted connection
//! whose future holds, inline, a 60 s timeout around the TLS handshake future (the same
//! future on plain TCP), so every connection carried ~8.7 KiB for its whole life, idle or
//! not (valgrind massif, `bench/README-edge.md` "Memory"); its streams get a 64 KiB read
//! buffer and a 1,460-byte write buffer at the handshake, kept for the connection's life;
//! and the app's `process_new` is one more boxed future per connection. Here the task's
//! future is the connection loop itself ([`EdgeApp::serve_http1`] or
//! [`EdgeApp::serve_tls`], not boxed inside it), and the stream is a [`PlainStream`]: the
//! socket with no buffers ([`crate::idle`] reads heads through a stack buffer, the direct
//! hit path writes to the socket itself, rustls reads records into its own buffer) and no
//! digest while the connection is idle. A TLS handshake runs in a boxed future freed when
//! it ends, bounded by `server.request_header_timeout` (a client that cannot finish a
//! handshake in that time is treated as one that cannot send a head in it); a failed or
//! late handshake closes the connection, logged at debug (scanners and port probes make
//! many).
//!
//! The contract is pingora's [`ServiceTrait`]'s: listening sockets come from the inherited
//! `fds` table under their address string when the edge starts as an upgrade, and sockets
//! bound here are put in that table, so the next upgrade takes them over (the same keys
//! pingora's listeners use, so either service can hand over to the other). On shutdown the
//! loops stop accepting; connections already accepted finish in
//! [`crate::connection::EdgeApp`], whose `cleanup` wakes the ones waiting for a head. A
//! socket that cannot be bound stops the process, as pingora's listeners do: an edge that
//! cannot serve its listen address must not look healthy.

use crate::connection::plain_stream::PlainStream;
use crate::connection::EdgeApp;
use async_trait::async_trait;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::Stream;
use pingora::server::{Fds, ListenFds, ShutdownWatch};
use pingora::services::Service as ServiceTrait;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};

/// Listen backlog of a socket bound here (pingora's `LISTENER_BACKLOG`).
const BACKLOG: u32 = 65535;

/// Pause after `accept` fails with "too many open files", so the loop does not spin while
/// the process is out of descriptors (pingora does the same).
const EMFILE_PAUSE: Duration = Duration::from_secs(1);

/// The service accepting connections on `addrs` for `app`: plain HTTP, or HTTPS when it
/// has a TLS acceptor.
pub struct Listeners {
    name: String,
    addrs: Vec<SocketAddr>,
    /// The TLS configuration (certificate, key, ALPN `h2` then `http/1.1`); `None`: plain.
    tls: Option<Arc<Acceptor>>,
    app: Arc<EdgeApp>,
}

impl Listeners {
    /// A service named `name` (thread names) serving plain HTTP on `addrs` with `app`.
    pub fn plain(name: impl Into<String>, addrs: Vec<SocketAddr>, app: Arc<EdgeApp>) -> Self {
        Listeners {
            name: name.into(),
            addrs,
            tls: None,
            app,
        }
    }

    /// A service named `name` serving HTTPS on `addrs` with `app`, handshakes by `tls`.
    pub fn tls(
        name: impl Into<String>,
        addrs: Vec<SocketAddr>,
        tls: Arc<Acceptor>,
        app: Arc<EdgeApp>,
    ) -> Self {
        Listeners {
            name: name.into(),
            addrs,
            tls: Some(tls),
            app,
        }
    }
}

/// The socket `table` holds under `key`, borrowed for as long as the table is.
///
/// The table owns the descriptors it lists (inherited from the upgrade socket, or put
/// there by a listener that keeps its socket open for the process's life) and pingora
/// sends them to the next upgrade, so a listener here takes a duplicate
/// (`try_clone_to_owned`): same socket, closed independently.
#[allow(unsafe_code)]
fn inherited<'t>(table: &'t Fds, key: &str) -> Option<BorrowedFd<'t>> {
    let fd = *table.get(key)?;
    // SAFETY: the descriptor stays open while `table` is borrowed (see above), and the
    // returned borrow cannot outlive that borrow.
    Some(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// The listening socket for `addr`: the one inherited in `fds`, or a new one, recorded there.
fn listener_for(addr: &SocketAddr, fds: Option<&ListenFds>) -> io::Result<TcpListener> {
    let key = addr.to_string();
    if let Some(fds) = fds {
        let owned = inherited(&fds.lock(), &key).map(|fd| fd.try_clone_to_owned());
        if let Some(owned) = owned {
            let std = std::net::TcpListener::from(owned?);
            std.set_nonblocking(true)?;
            return TcpListener::from_std(std);
        }
    }
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // As pingora's listeners: a restarted edge binds at once even with connections of the
    // old one in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(*addr)?;
    let listener = socket.listen(BACKLOG)?;
    if let Some(fds) = fds {
        fds.lock().add(key, listener.as_raw_fd());
    }
    Ok(listener)
}

/// Make an accepted socket a [`PlainStream`] (no buffers, see the module docs) with
/// `TCP_NODELAY`, as pingora's listeners set it.
fn stream_of(tcp: tokio::net::TcpStream, peer: SocketAddr) -> PlainStream {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
    PlainStream::new(tcp, peer)
}

/// Serve an accepted HTTPS connection: the handshake (boxed, so its state is freed when it
/// ends; bounded by the head deadline), then [`EdgeApp::serve_tls`].
async fn serve_tls(
    app: Arc<EdgeApp>,
    tls: Arc<Acceptor>,
    stream: PlainStream,
    shutdown: ShutdownWatch,
) {
    let peer = stream.peer();
    let handshake = Box::pin(tls.tls_handshake(stream));
    let stream: Stream = match tokio::time::timeout(app.header_timeout(), handshake).await {
        Ok(Ok(stream)) => Box::new(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake not done within the head deadline");
            return;
        }
    };
    // The acceptor is not needed past the handshake: no reference held for the
    // connection's life.
    drop(tls);
    app.serve_tls(stream, &shutdown).await;
}

/// Accept on `listener` until `shutdown` turns true; each connection runs in its own task.
async fn accept_loop(
    listener: Arc<TcpListener>,
    tls: Option<Arc<Acceptor>>,
    app: Arc<EdgeApp>,
    mut shutdown: ShutdownWatch,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = shutdown.changed() => match changed {
                Ok(()) if *shutdown.borrow() => break,
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        match accepted {
            Ok((tcp, peer)) => {
                let app = app.clone();
                let shutdown = shutdown.clone();
                // Made out here: what the task captures stays in its future for the
                // connection's life. The connection loop's future is the task's own (no
                // boxed future inside it): see `EdgeApp::serve_http1`.
                let stream = stream_of(tcp, peer);
                match &tls {
                    None => {
                        let stream: Stream = Box::new(stream);
                        tokio::spawn(async move {
                            app.serve_http1(stream, &shutdown).await;
                        });
                    }
                    Some(tls) => {
                        tokio::spawn(serve_tls(app, tls.clone(), stream, shutdown));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "accept failed");
                if e.raw_os_error() == Some(nix::libc::EMFILE) {
                    tokio::time::sleep(EMFILE_PAUSE).await;
                }
            }
        }
    }
}

#[async_trait]
impl ServiceTrait for Listeners {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let mut loops = Vec::new();
        for addr in &self.addrs {
            let listener = match listener_for(addr, fds.as_ref()) {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    let key = if self.tls.is_some() {
                        "server.tls_listen"
                    } else {
                        "server.listen"
                    };
                    tracing::error!(error = %e, "{key} {addr}: cannot listen");
                    std::process::exit(1);
                }
            };
            tracing::info!(%addr, "listening");
            for _ in 0..listeners_per_fd.max(1) {
                loops.push(tokio::spawn(accept_loop(
                    listener.clone(),
                    self.tls.clone(),
                    self.app.clone(),
                    shutdown.clone(),
                )));
            }
        }
        for l in loops {
            let _ = l.await;
        }
        self.app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.addrs.iter().map(ToString::to_string).collect())
    }
}
