//! The fast hit path: a fresh cached object on a cache route, asked without
//! `Range`/`If-Range`, answered from `request_filter` without pingora's cache state machine
//! (key, lookup, meta rebuild, hit handler). The service calls [`serve`] once; it asks
//! storage for the entry, asks [`head`] (with [`crate::policy`] and [`crate::rfc`]) whether
//! it is a hit this path serves and which headers the client gets, and writes the response,
//! or answers [`Hit::NotMine`] having written nothing, and pingora's path decides.
//!
//! The response is the one pingora's cache hit path builds (stored header, `Age`,
//! `Accept-Ranges`, 304 for matching conditionals via pingora's own filter, HEAD without
//! body, and [`crate::policy::client_facing`], which pingora's path applies in
//! `response_filter`).
//!
//! Why: on hot hits the edge's own work per request is small next to what it asks of the
//! kernel and of pingora's generic write path. `perf` on a 64 KiB hit put ~7.7 of the ~8.5
//! µs/request behind nginx in the kernel's copy of the body from user memory into socket
//! buffers (nginx sendfiles cached files); with sendfile the socket references page-cache
//! pages instead. For small hits the head is serialized once per second per entry
//! ([`crate::storage::head_cache`]) and head and body leave in one `sendmsg`.
//!
//! Where it writes:
//! - plain-TCP HTTP/1.1 keep-alive: straight to the socket through [`DirectSocket`] (memory
//!   hits; fresh disk-tier objects too: small ones are promoted to memory first, large ones
//!   go out from their verified file);
//! - bodies up to `cache.memory.sendfile_max_size` by sendfile, larger ones copied (from
//!   memory, or read from the file in chunks): on loopback TCP here sendfile of a 1 MiB body
//!   ran at a third of the copy's rate while up to 512 KiB it was the faster one
//!   (bench/README-edge.md, "2026-12-03");
//! - any other connection (TLS, HTTP/2, HTTP/1.0, `Connection: close`, an unread request
//!   body): memory hits through pingora's session writer.
//!
//! Integrity: sendfile cannot hash what it sends, so only a file whose identity equals one
//! whose body was checked goes out this way ([`crate::storage::body_file`]); a kept file
//! changed in place is not used (the verified in-memory bytes go out instead). What is left
//! is a write racing the send itself, which only reading the bytes could catch.

pub mod head;
pub mod socket;

use crate::config::{Route, RouteMode};
use crate::metrics::{Tier, METRICS};
use crate::policy;
use crate::rfc;
use crate::storage::body_file::BodyFile;
use crate::storage::head_cache::HeadKind;
use crate::storage::memory::{HotMeta, MemEntry};
use crate::storage::{FreshHit, TieredStorage};
use bytes::Bytes;
use pingora::proxy::Session;
use pingora::Result;
use socket::{Body, DirectSocket};
use std::time::SystemTime;

/// What [`serve`] did with a request.
pub enum Hit {
    /// Not a fresh hit this path serves: nothing was written, pingora's path decides.
    NotMine,
    /// A hit written straight to the socket, and what went out (pingora's session counted
    /// none of it).
    Direct(DirectSent),
    /// A hit written through pingora's session; `Err` when that write failed (the
    /// response may be partly sent).
    Session(Result<()>),
}

/// A response the direct path wrote to the socket itself.
#[derive(Debug, Clone, Copy)]
pub struct DirectSent {
    /// Response status.
    pub status: u16,
    /// Head and body bytes written.
    pub bytes: u64,
    /// Body bytes written.
    pub body_bytes: u64,
}

/// Where the response goes: the socket itself, or pingora's session writer.
enum Out<'a> {
    Direct(DirectSocket<'a>),
    Session(&'a mut Session),
}

impl Out<'_> {
    fn request(&self) -> &pingora::http::RequestHeader {
        match self {
            Out::Direct(s) => s.request(),
            Out::Session(s) => s.req_header(),
        }
    }
}

/// Serve `session`'s request on `route` from a fresh cached object if this path can (see
/// the module docs). `signed_exp` is the verified expiry of a signed URL.
pub async fn serve(
    storage: &'static TieredStorage,
    session: &mut Session,
    route: &Route,
    signed_exp: Option<u64>,
) -> Hit {
    let req = session.req_header();
    if route.mode != RouteMode::Cache
        || !policy::request_cacheable(req)
        || req.headers.contains_key(http::header::RANGE)
        || req.headers.contains_key(http::header::IF_RANGE)
        || (route.semantics.request_directives && rfc::request::any(req))
    {
        return Hit::NotMine;
    }
    let out = match DirectSocket::of(session) {
        Ok(s) => Out::Direct(s),
        Err(s) => Out::Session(s),
    };
    // Disk objects only where they can be sent from their file (a direct socket).
    let direct = matches!(out, Out::Direct(_));
    let found = {
        let key = policy::cache_key_url(Some(route), policy::path_and_query(out.request()));
        storage.fresh_hit(&key, SystemTime::now(), direct).await
    };
    // A disk lookup may have run on the blocking pool: Age and Date follow the clock now.
    let now = SystemTime::now();
    match (found, out) {
        (Some(FreshHit::Memory(entry)), out) => {
            memory_hit(out, &entry, route, signed_exp, now).await
        }
        (Some(FreshHit::File(found)), Out::Direct(sock)) => {
            let (hot, file) = &*found;
            let copy = storage.copies(file.len());
            disk_hit(sock, route, signed_exp, now, hot, file, copy).await
        }
        _ => Hit::NotMine,
    }
}

/// A fresh memory-tier entry: its head of this second (or one built for this request's
/// signed URL) and its body, to the socket or through pingora's session.
async fn memory_hit(
    out: Out<'_>,
    entry: &MemEntry,
    route: &Route,
    signed_exp: Option<u64>,
    now: SystemTime,
) -> Hit {
    let Some((not_modified, header_only)) =
        head::shape(out.request(), &entry.hot, entry.body.len() as u64)
    else {
        return Hit::NotMine;
    };
    let mut sock = match out {
        Out::Direct(sock) => sock,
        Out::Session(session) => {
            let written = async {
                let header = head::hit_header(&entry.hot, route, signed_exp, now, not_modified)?;
                session
                    .write_response_header(header, header_only)
                    .await
                    .map_err(|e| e.into_down())?;
                if !header_only {
                    METRICS.served(Tier::Memory, entry.body.len() as u64);
                    session
                        .write_response_body(Some(entry.body.clone()), true)
                        .await
                        .map_err(|e| e.into_down())?;
                }
                Ok::<_, Box<pingora::Error>>(())
            }
            .await;
            return Hit::Session(written);
        }
    };
    let kind = if not_modified {
        HeadKind::NotModified
    } else {
        HeadKind::Ok
    };
    let head = match signed_exp {
        // Cache-Control depends on this URL's expiry: built for this request.
        Some(exp) => head::hit_header(&entry.hot, route, Some(exp), now, not_modified)
            .ok()
            .and_then(head::direct_head),
        None => entry.heads.get(kind, now, || {
            head::direct_head(head::hit_header(&entry.hot, route, None, now, not_modified).ok()?)
        }),
    };
    let Some(head) = head else {
        // Not expected for a stored 200; nothing is written, pingora's path decides.
        return Hit::NotMine;
    };
    let body = match entry.file.as_deref() {
        _ if header_only => Body::None,
        Some(f) if f.unchanged() => Body::File(f),
        // No kept file, or it changed on disk since it was verified: the verified
        // in-memory bytes go out instead.
        _ => Body::Bytes(&entry.body),
    };
    let status = if not_modified { 304 } else { 200 };
    Hit::Direct(write(&mut sock, head, body, Tier::Memory, status).await)
}

/// A large fresh disk-tier object, written directly: head built for this request, body
/// from the verified entry file, by sendfile or (`copy`: above
/// `cache.memory.sendfile_max_size`) read and copied. Nothing written when the stored
/// response is not the plain 200 this path mirrors.
async fn disk_hit(
    mut sock: DirectSocket<'_>,
    route: &Route,
    signed_exp: Option<u64>,
    now: SystemTime,
    hot: &HotMeta,
    file: &BodyFile,
    copy: bool,
) -> Hit {
    let Some((not_modified, header_only)) = head::shape(sock.request(), hot, file.len()) else {
        return Hit::NotMine;
    };
    let Some(head) = head::hit_header(hot, route, signed_exp, now, not_modified)
        .ok()
        .and_then(head::direct_head)
    else {
        return Hit::NotMine;
    };
    let body = match (header_only, copy) {
        (true, _) => Body::None,
        (false, true) => Body::FileCopy(file),
        (false, false) => Body::File(file),
    };
    let status = if not_modified { 304 } else { 200 };
    Hit::Direct(write(&mut sock, head, body, Tier::Disk, status).await)
}

/// Write `head` and `body` (its bytes counted for `tier`) to the socket. Pingora's session
/// saw no response of its own, so it has no body left to finish and reuses the connection;
/// after a failed write [`DirectSocket::send`] has marked it not reusable and pingora
/// closes it instead of writing anything more.
async fn write(
    sock: &mut DirectSocket<'_>,
    head: Bytes,
    body: Body<'_>,
    tier: Tier,
    status: u16,
) -> DirectSent {
    let (len, sendfile) = (body.size(), matches!(body, Body::File(_)));
    let head_len = head.len() as u64;
    let written = match sock.send(&head, body).await {
        Ok(n) => {
            METRICS.served(tier, len);
            if sendfile {
                METRICS.sendfile_responses.inc();
            }
            n
        }
        Err((e, written)) => {
            tracing::debug!(error = %e, written, "direct write failed, closing connection");
            written
        }
    };
    DirectSent {
        status,
        bytes: written,
        body_bytes: written.saturating_sub(head_len),
    }
}
