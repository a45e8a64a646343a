//! Where cached body bytes start in memory.
//!
//! Every body that TLS (rustls) or HTTP/2 copies out of this process's memory is copied by
//! glibc's `memcpy`, which for 4 KiB and more uses `rep movsb`. On the AMD EPYC (Zen 4)
//! machines the edge is benchmarked on, `rep movsb` runs ~20x slower (2.2–3.1 GB/s instead
//! of 50–100) when the destination starts 1 to 15 bytes past the source's offset within a
//! 4 KiB page. rustls copies each 16 KiB plaintext record into a fresh, page-aligned
//! allocation behind a 5-byte record header, so a page-aligned source (what the allocator
//! hands out for any large body) put every record of every TLS hit on the slow path: 26 % of
//! the edge's core on 64 KiB hits over https/1.1 (`perf`), and glibc told not to use
//! `rep movsb` served 64 KiB and 1 MiB https/1.1 hits 28 % and 39 % faster. Intel Xeons
//! measured the same day have no such slow path; there placement changes nothing.
//! `bench/memcpy-offset.c` tells which kind a machine is; bench/README-edge.md has the runs.
//!
//! So a body of at least [`MIN_PLACED_LEN`] bytes starts in the middle half of a page
//! ([`placed_well`]): at least 1 KiB away from the page offsets where record and frame
//! headers put the copy's destination. It costs at most [`SLACK`] bytes per body, which the
//! memory tier's weigher counts. Smaller bodies are copied by vector loops, where placement
//! does not matter, and are left as they are.
//!
//! Bodies the memory tier keeps ([`body`]) of at least [`MAPPED_MIN_LEN`] bytes get an
//! anonymous mapping of their own instead of an allocator block: freeing one returns its
//! pages at once, and it holds its length rounded up to a page, which the weigher counts
//! ([`overhead`]). From mimalloc they held far more than they weighed: on the media-library
//! run (bench/README-edge.md, "2026-12-03") the edge's RSS was the 256 MiB tier + 90 MiB
//! after the fill and + 214 MiB once promotions churned through it (blocks rounded up to
//! 64 KiB spans, pages kept by the heaps that had allocated them). glibc's malloc maps
//! blocks of 128 KiB and more the same way; transient buffers ([`zeroed`]) stay on the heap.

use bytes::{Buf, Bytes, BytesMut};
use std::ops::{Deref, DerefMut};

/// Page size the copy penalty repeats at (bytes).
const PAGE: usize = 4096;
/// A placed body starts at a page offset in `[EDGE, PAGE - EDGE]` (bytes).
const EDGE: usize = 1024;
/// Bodies shorter than this (bytes) are not placed: glibc copies them without `rep movsb`.
pub const MIN_PLACED_LEN: usize = 4096;
/// Extra bytes allocated for a placed body: the largest shift [`zeroed`] needs (from a page
/// offset just past `PAGE - EDGE` round to `EDGE`).
pub const SLACK: usize = 2 * EDGE;

/// Whether `bytes` starts where copies out of it are fast (see the module docs); true for
/// any body shorter than [`MIN_PLACED_LEN`].
pub fn placed_well(bytes: &[u8]) -> bool {
    bytes.len() < MIN_PLACED_LEN || {
        let offset = bytes.as_ptr() as usize % PAGE;
        (EDGE..=PAGE - EDGE).contains(&offset)
    }
}

/// Memory-tier bodies at least this long (bytes) get their own mapping (see the module docs).
pub const MAPPED_MIN_LEN: usize = 64 * 1024;
/// Where a mapped body starts in its first page (bytes): the middle of the placed range.
const MAPPED_START: usize = PAGE / 2;

/// Extra memory a memory-tier body of `len` bytes (made by [`body`] or [`joined`]) holds
/// beyond its bytes (placement slack, page rounding of a mapping).
pub fn overhead(len: usize) -> usize {
    if len >= MAPPED_MIN_LEN {
        (MAPPED_START + len).div_ceil(PAGE) * PAGE - len
    } else if len >= MIN_PLACED_LEN {
        SLACK
    } else {
        0
    }
}

/// A zeroed, placed buffer for a body the memory tier may keep; [`BodyBuf::freeze`] makes it
/// the body's [`Bytes`]. At least [`MAPPED_MIN_LEN`] bytes: an anonymous mapping (heap
/// allocation if the kernel refuses one), else [`zeroed`].
pub fn body(len: usize) -> BodyBuf {
    if len >= MAPPED_MIN_LEN {
        if let Ok(map) = memmap2::MmapOptions::new()
            .len(MAPPED_START + len)
            .populate()
            .map_anon()
        {
            return BodyBuf::Mapped { map, len };
        }
    }
    BodyBuf::Heap(zeroed(len))
}

/// A body being read into memory (see [`body`]).
pub enum BodyBuf {
    /// On the allocator's heap.
    Heap(BytesMut),
    /// In its own anonymous mapping, `len` bytes from [`MAPPED_START`].
    Mapped { map: memmap2::MmapMut, len: usize },
}

impl BodyBuf {
    /// Shorten to `len` bytes (no-op when already shorter).
    pub fn truncate(&mut self, len: usize) {
        match self {
            BodyBuf::Heap(b) => b.truncate(len),
            BodyBuf::Mapped { len: l, .. } => *l = (*l).min(len),
        }
    }

    /// The bytes, shared and immutable; a mapping is unmapped when the last clone goes.
    pub fn freeze(self) -> Bytes {
        match self {
            BodyBuf::Heap(b) => b.freeze(),
            BodyBuf::Mapped { map, len } => {
                Bytes::from_owner(map).slice(MAPPED_START..MAPPED_START + len)
            }
        }
    }
}

impl Deref for BodyBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            BodyBuf::Heap(b) => b,
            BodyBuf::Mapped { map, len } => &map[MAPPED_START..MAPPED_START + *len],
        }
    }
}

impl DerefMut for BodyBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            BodyBuf::Heap(b) => b,
            BodyBuf::Mapped { map, len } => &mut map[MAPPED_START..MAPPED_START + *len],
        }
    }
}

/// A zeroed buffer of `len` bytes, placed (see the module docs) when it is long enough.
pub fn zeroed(len: usize) -> BytesMut {
    if len < MIN_PLACED_LEN {
        return BytesMut::zeroed(len);
    }
    let mut buf = BytesMut::zeroed(len + SLACK);
    let shift = if placed_well(&buf) {
        0
    } else {
        (EDGE + PAGE - buf.as_ptr() as usize % PAGE) % PAGE
    };
    // `advance` moves the start inside the same allocation; nothing is copied.
    buf.advance(shift);
    buf.truncate(len);
    buf
}

/// `chunks` (`len` bytes in all) as one placed body: the single chunk itself when it is
/// already placed well, else one copy.
pub fn joined(chunks: Vec<Bytes>, len: usize) -> Bytes {
    if let [one] = chunks.as_slice() {
        // A long body is copied into its own mapping even so: a chunk may hold on to a larger
        // read buffer, which the weigher would not see.
        if placed_well(one) && len < MAPPED_MIN_LEN {
            return one.clone();
        }
    }
    let mut buf = body(len);
    let mut at = 0;
    for c in &chunks {
        let end = (at + c.len()).min(len);
        buf[at..end].copy_from_slice(&c[..end - at]);
        at = end;
    }
    buf.truncate(at);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_buffers_start_in_the_middle_half_of_a_page_small_ones_anywhere() {
        for len in [MIN_PLACED_LEN, 64 * 1024, 1 << 20, 3 * 1024 * 1024 + 7] {
            let b = zeroed(len);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            let offset = b.as_ptr() as usize % PAGE;
            assert!(
                (EDGE..=PAGE - EDGE).contains(&offset),
                "{len}: offset {offset}"
            );
        }
        assert_eq!(zeroed(100).len(), 100);
        assert!(placed_well(&zeroed(MIN_PLACED_LEN - 1)));
    }

    #[test]
    fn long_bodies_get_a_placed_mapping_weighed_with_its_page_rounding() {
        for len in [MAPPED_MIN_LEN, 300_001, 1 << 20] {
            let mut b = body(len);
            assert!(matches!(b, BodyBuf::Mapped { .. }), "{len}: not mapped");
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            b[0] = 1;
            b[len - 1] = 2;
            let frozen = b.freeze();
            assert_eq!(frozen.len(), len);
            assert_eq!((frozen[0], frozen[len - 1]), (1, 2));
            assert!(placed_well(&frozen), "{len}: not placed");
            let held = (MAPPED_START + len).div_ceil(PAGE) * PAGE;
            assert_eq!(len + overhead(len), held);
            assert!(overhead(len) < MAPPED_START + PAGE);
        }
        assert!(matches!(body(MAPPED_MIN_LEN - 1), BodyBuf::Heap(_)));
        let joined_long = joined(vec![Bytes::from(vec![7u8; 70_000])], 70_000);
        assert_eq!(joined_long, Bytes::from(vec![7u8; 70_000]));
        assert!(placed_well(&joined_long));
    }

    #[test]
    fn joined_keeps_the_bytes_and_their_order() {
        let chunks: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 3000])).collect();
        let body = joined(chunks, 15_000);
        assert_eq!(body.len(), 15_000);
        assert!(placed_well(&body));
        for (i, part) in body.chunks(3000).enumerate() {
            assert!(part.iter().all(|&x| usize::from(x) == i));
        }
    }

    #[test]
    fn a_page_aligned_body_is_moved_a_placed_one_is_kept() {
        // A page-aligned start is the case the module exists for.
        let mut aligned = BytesMut::zeroed(32 * 1024 + PAGE);
        let shift = (PAGE - aligned.as_ptr() as usize % PAGE) % PAGE;
        aligned.advance(shift);
        aligned.truncate(32 * 1024);
        aligned[0] = 9;
        let aligned = aligned.freeze();
        assert!(!placed_well(&aligned));
        let moved = joined(vec![aligned.clone()], aligned.len());
        assert!(placed_well(&moved));
        assert_eq!(moved, aligned);
        let kept = joined(vec![moved.clone()], moved.len());
        assert_eq!(kept.as_ptr(), moved.as_ptr());
    }
}
