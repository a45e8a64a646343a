//! Streaming fills: while a miss handler writes an object, other readers (and the filling
//! request itself) read the bytes already written from the temp file, as they arrive.
//!
//! A [`Fill`] is registered in [`Fills`] when the miss handler is created and removed when it
//! finishes or is dropped. Readers open the temp file when they attach, so the later rename
//! into the final path (or deletion on failure) does not disturb them; progress comes from a
//! `watch` channel. A fill that is dropped before `finish` is marked failed, and its readers
//! end with an error instead of a short body.

use bytes::{Bytes, BytesMut};
use pingora::{Error, ErrorType, Result};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

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
    /// Temp file being written.
    pub tmp_path: PathBuf,
    /// Offset of the body in the temp file.
    pub body_offset: u64,
    /// `CacheMeta` halves, for readers that attach via `lookup`.
    pub internal: Vec<u8>,
    /// See `internal`.
    pub header: Vec<u8>,
    progress: watch::Sender<FillState>,
}

impl Fill {
    /// Publish new progress.
    pub fn set(&self, s: FillState) {
        self.progress.send_replace(s);
    }

    /// Attach a reader; `None` when the temp file is already gone (committed or failed).
    pub fn reader(&self, chunk: usize) -> Option<FillHit> {
        if matches!(*self.progress.borrow(), FillState::Failed) {
            return None;
        }
        let file = File::open(&self.tmp_path).ok()?;
        Some(FillHit {
            file,
            body_offset: self.body_offset,
            read: 0,
            end: None,
            chunk,
            progress: self.progress.subscribe(),
        })
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

    /// Register a new fill for `hash`.
    pub fn start(
        &self,
        hash: &str,
        tmp_path: PathBuf,
        body_offset: u64,
        internal: Vec<u8>,
        header: Vec<u8>,
    ) -> Arc<Fill> {
        let (progress, _) = watch::channel(FillState::Partial(0));
        let fill = Arc::new(Fill {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tmp_path,
            body_offset,
            internal,
            header,
            progress,
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
    file: File,
    body_offset: u64,
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
                let n = usize::try_from((limit - self.read).min(self.chunk as u64))
                    .unwrap_or(self.chunk);
                let mut buf = BytesMut::zeroed(n);
                self.file
                    .read_exact_at(&mut buf, self.body_offset + self.read)
                    .map_err(|e| Error::because(ErrorType::InternalError, "cache fill read", e))?;
                self.read += n as u64;
                return Ok(Some(buf.freeze()));
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
