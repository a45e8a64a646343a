//! Streaming fills: while a miss handler writes an object, other readers (and the filling
//! request itself) read the bytes already written, as they arrive, each at its own pace.
//!
//! A [`Fill`] is registered in [`Fills`] when the miss handler is created and removed when it
//! finishes or is dropped. It holds the temp file open (readers use positioned reads on it),
//! so the later rename into the final path, or its deletion, does not disturb them; progress
//! comes from a `watch` channel. A fill that is dropped before `finish` is marked failed,
//! and its readers end with an error instead of a short body.
//!
//! When the disk stops taking the body (a full disk, any write error), the fill goes on in
//! memory: the bytes after the last one the file holds are kept in a queue that is trimmed
//! behind the slowest reader, so every reader still gets the whole body from the origin's
//! stream. The queue is bounded by [`MEMORY_TAIL_MAX`]; a reader that falls further behind
//! than that is cut off (counted) rather than letting one client grow the edge's memory.
//! Such a fill is no longer listed in [`Fills`]: a new request cannot start at byte 0 of a
//! body whose middle may already be gone, so it fetches from the origin itself.

use super::placement;
use crate::metrics::METRICS;
use bytes::Bytes;
use pingora::{Error, ErrorType, Result};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use tokio::sync::watch;

/// Most body bytes one fill keeps in memory after its disk write failed (see the module
/// doc). 32 MiB: a reader may lag the origin by that much before it is cut off.
pub const MEMORY_TAIL_MAX: u64 = 32 << 20;

/// Progress of one fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillState {
    /// This many body bytes are written so far.
    Partial(u64),
    /// The body is complete with this many bytes.
    Complete(u64),
    /// The writer gave up; the bytes must not be served as a whole object.
    Failed,
}

/// One in-progress write.
pub struct Fill {
    /// Identifies the write (the streaming write tag).
    pub id: u64,
    /// The temp file being written, open for reading; `None` when it could not be created.
    file: Option<File>,
    /// Offset of the body in the temp file.
    pub body_offset: u64,
    /// `CacheMeta` halves, for readers that attach via `lookup`.
    pub internal: Vec<u8>,
    /// See `internal`.
    pub header: Vec<u8>,
    progress: watch::Sender<FillState>,
    tail: Mutex<Tail>,
    /// Body positions of the attached readers (for trimming the memory tail).
    readers: Mutex<Vec<Weak<AtomicU64>>>,
}

/// Where the body bytes of a fill are.
#[derive(Default)]
struct Tail {
    /// Body bytes in the file once the disk stopped taking more; `None` while every byte
    /// goes to the file.
    disk_len: Option<u64>,
    /// Body offset of the first byte in `chunks`.
    start: u64,
    /// Bytes after `disk_len`, in order, from `start` on.
    chunks: VecDeque<Bytes>,
    /// Total length of `chunks`.
    bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a holder panicked; the data is still consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fill {
    /// Publish new progress.
    pub fn set(&self, s: FillState) {
        self.progress.send_replace(s);
    }

    /// Attach a reader at the start of the body; `None` when the fill failed.
    pub fn reader(self: &Arc<Self>, chunk: usize) -> Option<FillHit> {
        if matches!(*self.progress.borrow(), FillState::Failed) {
            return None;
        }
        let pos = Arc::new(AtomicU64::new(0));
        lock(&self.readers).push(Arc::downgrade(&pos));
        Some(FillHit {
            fill: self.clone(),
            pos,
            read: 0,
            end: None,
            chunk,
            progress: self.progress.subscribe(),
        })
    }

    /// The disk holds the first `disk_len` body bytes and will take no more: keep what
    /// follows in memory.
    pub fn spill_to_memory(&self, disk_len: u64) {
        let mut t = lock(&self.tail);
        if t.disk_len.is_none() {
            t.disk_len = Some(disk_len);
            t.start = disk_len;
        }
    }

    /// Append body bytes after the disk stopped (see [`Self::spill_to_memory`]), dropping
    /// what every reader has read and, past [`MEMORY_TAIL_MAX`], what the slowest ones
    /// still need.
    pub fn push_memory(&self, data: Bytes) {
        let min = self.slowest_reader();
        let mut t = lock(&self.tail);
        t.bytes += data.len() as u64;
        t.chunks.push_back(data);
        while let Some(front) = t.chunks.front() {
            let len = front.len() as u64;
            let read_by_all = t.start + len <= min;
            if !read_by_all && (t.bytes <= MEMORY_TAIL_MAX || t.chunks.len() == 1) {
                break;
            }
            t.chunks.pop_front();
            t.start += len;
            t.bytes -= len;
        }
    }

    /// The lowest body position of an attached reader (`u64::MAX`: none attached).
    fn slowest_reader(&self) -> u64 {
        let mut g = lock(&self.readers);
        g.retain(|w| w.strong_count() > 0);
        g.iter()
            .filter_map(Weak::upgrade)
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Up to `max` body bytes at `pos`, from the file or the memory tail.
    fn read_at(&self, pos: u64, max: u64) -> Result<Bytes> {
        let from_memory = {
            let t = lock(&self.tail);
            match t.disk_len {
                Some(d) if pos >= d => {
                    if pos < t.start {
                        METRICS.fill_readers_cut_off.inc();
                        return Error::e_explain(
                            ErrorType::InternalError,
                            "reader fell too far behind a fill held in memory",
                        );
                    }
                    let mut off = t.start;
                    let mut found = None;
                    for c in &t.chunks {
                        let len = c.len() as u64;
                        if pos < off + len {
                            let from = usize::try_from(pos - off).unwrap_or(0);
                            let to = usize::try_from((pos - off + max).min(len)).unwrap_or(c.len());
                            found = Some(c.slice(from..to));
                            break;
                        }
                        off += len;
                    }
                    Some(found.ok_or_else(|| {
                        Error::explain(ErrorType::InternalError, "fill bytes not in memory")
                    })?)
                }
                Some(d) => return self.read_file(pos, max.min(d - pos)),
                None => None,
            }
        };
        match from_memory {
            Some(b) => Ok(b),
            None => self.read_file(pos, max),
        }
    }

    fn read_file(&self, pos: u64, len: u64) -> Result<Bytes> {
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "fill has no file"))?;
        let mut buf = placement::zeroed(usize::try_from(len).unwrap_or(0));
        file.read_exact_at(&mut buf, self.body_offset + pos)
            .map_err(|e| Error::because(ErrorType::InternalError, "cache fill read", e))?;
        Ok(buf.freeze())
    }
}

/// Registry of fills by hex cache key hash.
#[derive(Default)]
pub struct Fills {
    map: Mutex<HashMap<String, Vec<Arc<Fill>>>>,
    next_id: AtomicU64,
    // Fills in progress; lets the hit path skip the mutex when nothing is being filled.
    active: AtomicUsize,
}

impl Fills {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<Fill>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a new fill for `hash`. `file` is its temp file open for reading (`None`:
    /// there is none, the body goes to memory from its first byte).
    pub fn start(
        &self,
        hash: &str,
        file: Option<File>,
        body_offset: u64,
        internal: Vec<u8>,
        header: Vec<u8>,
    ) -> Arc<Fill> {
        let (progress, _) = watch::channel(FillState::Partial(0));
        let tail = Tail {
            disk_len: file.is_none().then_some(0),
            ..Tail::default()
        };
        let fill = Arc::new(Fill {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            file,
            body_offset,
            internal,
            header,
            progress,
            tail: Mutex::new(tail),
            readers: Mutex::new(Vec::new()),
        });
        self.lock()
            .entry(hash.to_string())
            .or_default()
            .push(fill.clone());
        self.active.fetch_add(1, Ordering::AcqRel);
        fill
    }

    /// Unregister a fill.
    pub fn end(&self, hash: &str, id: u64) {
        let mut g = self.lock();
        if let Some(v) = g.get_mut(hash) {
            let before = v.len();
            v.retain(|f| f.id != id);
            if v.len() < before {
                self.active.fetch_sub(1, Ordering::AcqRel);
            }
            if v.is_empty() {
                g.remove(hash);
            }
        }
    }

    /// Any fill in progress for `hash` (`id`: exactly that one).
    pub fn find(&self, hash: &str, id: Option<u64>) -> Option<Arc<Fill>> {
        if self.active.load(Ordering::Acquire) == 0 {
            return None;
        }
        let g = self.lock();
        let v = g.get(hash)?;
        match id {
            Some(id) => v.iter().find(|f| f.id == id).cloned(),
            None => v.first().cloned(),
        }
    }
}

/// Hit handler reading an object while it is being filled, at its reader's own pace: it
/// waits for the writer only when it has caught up. Seekable: a range (`seek`) is served
/// from the bytes already written, waiting for the rest as the whole-body read does.
pub struct FillHit {
    fill: Arc<Fill>,
    /// `read`, published for [`Fill::push_memory`].
    pos: Arc<AtomicU64>,
    read: u64,
    /// Exclusive end of a range set by `seek`; `None` = to the end of the body.
    end: Option<u64>,
    chunk: usize,
    progress: watch::Receiver<FillState>,
}

impl FillHit {
    /// Restrict the following reads to `start..end` (end exclusive). Fails when the body is
    /// complete and `start` is past it.
    pub fn seek(&mut self, start: u64, end: Option<u64>) -> Result<()> {
        if let FillState::Complete(n) = *self.progress.borrow() {
            if start >= n {
                return Error::e_explain(ErrorType::InternalError, "seek start out of range");
            }
        }
        self.read = start;
        self.pos.store(start, Ordering::Release);
        self.end = end;
        Ok(())
    }

    /// Next chunk, waiting for the writer when caught up; `None` at the end.
    pub async fn read(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.end.is_some_and(|e| self.read >= e) {
                return Ok(None);
            }
            let state = *self.progress.borrow_and_update();
            let available = match state {
                FillState::Failed => {
                    return Error::e_explain(ErrorType::InternalError, "cache fill failed")
                }
                FillState::Complete(n) if n <= self.read => return Ok(None),
                FillState::Partial(n) | FillState::Complete(n) => n,
            };
            let limit = self.end.map_or(available, |e| e.min(available));
            if limit > self.read {
                let max = (limit - self.read).min(self.chunk as u64);
                let buf = self.fill.read_at(self.read, max)?;
                self.read += buf.len() as u64;
                self.pos.store(self.read, Ordering::Release);
                return Ok(Some(buf));
            }
            if self.progress.changed().await.is_err() {
                // The writer is gone; only a completed body may be read to its end.
                let last = *self.progress.borrow();
                if !matches!(last, FillState::Complete(n) if n > self.read) {
                    return Error::e_explain(ErrorType::InternalError, "cache fill abandoned");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory_fill() -> (Fills, Arc<Fill>) {
        let fills = Fills::default();
        let f = fills.start("h", None, 0, Vec::new(), Vec::new());
        (fills, f)
    }

    #[tokio::test]
    async fn memory_tail_is_trimmed_behind_the_slowest_reader() {
        let (_fills, f) = memory_fill();
        let mut a = f.reader(1 << 20).unwrap(); // unwrap: test-only
        let mut b = f.reader(1 << 20).unwrap(); // unwrap: test-only
        let mut total = 0;
        for i in 0..4u8 {
            f.push_memory(Bytes::from(vec![i; 1000]));
            total += 1000;
            f.set(FillState::Partial(total));
            assert_eq!(a.read().await.unwrap().unwrap()[..], [i; 1000][..]); // unwrap: test-only
        }
        // b has read nothing: everything is kept for it.
        assert_eq!(lock(&f.tail).bytes, 4000);
        for i in 0..4u8 {
            assert_eq!(b.read().await.unwrap().unwrap()[..], [i; 1000][..]); // unwrap: test-only
        }
        // both are past the first four chunks: the next push drops them
        f.push_memory(Bytes::from_static(b"end"));
        f.set(FillState::Complete(total + 3));
        assert_eq!(lock(&f.tail).bytes, 3);
        assert_eq!(&a.read().await.unwrap().unwrap()[..], b"end"); // unwrap: test-only
        assert!(a.read().await.unwrap().is_none()); // unwrap: test-only
    }

    #[tokio::test]
    async fn a_reader_lagging_past_the_memory_bound_is_cut_off() {
        let (_fills, f) = memory_fill();
        let chunk = 1 << 20;
        let mut fast = f.reader(chunk).unwrap(); // unwrap: test-only
        let mut slow = f.reader(chunk).unwrap(); // unwrap: test-only
        let mut total = 0u64;
        while total <= MEMORY_TAIL_MAX + 2 * chunk as u64 {
            f.push_memory(Bytes::from(vec![7u8; chunk]));
            total += chunk as u64;
            f.set(FillState::Partial(total));
            assert_eq!(fast.read().await.unwrap().unwrap().len(), chunk); // unwrap: test-only
        }
        assert!(lock(&f.tail).bytes <= MEMORY_TAIL_MAX);
        assert!(slow.read().await.is_err());
    }
}
