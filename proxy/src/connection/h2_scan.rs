//! Where an HTTP/2 client's byte stream is as far as header blocks go ([`H2Scan`]), so the
//! head deadline of [`super::HeadDeadline`] can apply to HTTP/2 too: frame headers only,
//! nothing decoded (RFC 9113 §3.4, §4.1, §6.2, §6.10).

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;
/// Frame types and the flag a header block ends with (RFC 9113 §6.2, §6.10).
const H2_HEADERS: u8 = 0x1;
const H2_CONTINUATION: u8 = 0x9;
const H2_END_HEADERS: u8 = 0x4;

/// Where an HTTP/2 client's byte stream is, as far as header blocks go: the connection
/// preface, then frames of a 9-byte header and a payload whose length it names.
#[derive(Debug)]
pub(super) struct H2Scan {
    preface_left: usize,
    /// Bytes of the current frame header read so far.
    frame_head: [u8; 9],
    frame_head_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// The current frame ends a header block once its payload is in.
    ends_block: bool,
    /// A header block has started and not ended.
    in_block: bool,
    /// The first header block of the connection is complete.
    first_done: bool,
}

impl H2Scan {
    pub(super) fn new() -> Self {
        H2Scan {
            preface_left: H2_PREFACE_LEN,
            frame_head: [0; 9],
            frame_head_len: 0,
            payload_left: 0,
            ends_block: false,
            in_block: false,
            first_done: false,
        }
    }

    /// Follow `data`, the next bytes the client sent.
    pub(super) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(data.len());
                self.preface_left -= n;
                data = &data[n..];
            } else if self.payload_left > 0 {
                let n = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.payload_left -= n as u64;
                data = &data[n..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
            } else {
                let n = (9 - self.frame_head_len).min(data.len());
                self.frame_head[self.frame_head_len..self.frame_head_len + n]
                    .copy_from_slice(&data[..n]);
                self.frame_head_len += n;
                data = &data[n..];
                if self.frame_head_len == 9 {
                    self.frame_head_len = 0;
                    let h = self.frame_head;
                    self.payload_left = u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
                    let header_frame = matches!(h[3], H2_HEADERS | H2_CONTINUATION);
                    self.in_block |= header_frame;
                    self.ends_block = header_frame && h[4] & H2_END_HEADERS != 0;
                    if self.payload_left == 0 {
                        self.frame_done();
                    }
                }
            }
        }
    }

    fn frame_done(&mut self) {
        if self.ends_block {
            self.ends_block = false;
            self.in_block = false;
            self.first_done = true;
        }
    }

    /// Whether a head is being received: the first one of the connection (from the
    /// accept), or a header block that has started.
    pub(super) fn in_head(&self) -> bool {
        !self.first_done || self.in_block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_head(len: u32, kind: u8, flags: u8) -> Vec<u8> {
        let l = len.to_be_bytes();
        vec![l[1], l[2], l[3], kind, flags, 0, 0, 0, 1]
    }

    /// Feed `bytes` one at a time, as a trickling client would send them.
    fn feed_bytewise(scan: &mut H2Scan, bytes: &[u8]) {
        for b in bytes {
            scan.feed(std::slice::from_ref(b));
        }
    }

    #[test]
    fn h2_scan_follows_header_blocks_across_reads() {
        let mut scan = H2Scan::new();
        // From the accept until the first header block ends, a head is in progress.
        feed_bytewise(&mut scan, &[0; H2_PREFACE_LEN]);
        assert!(scan.in_head());
        feed_bytewise(&mut scan, &frame_head(6, 0x4, 0)); // SETTINGS
        feed_bytewise(&mut scan, &[0; 6]);
        assert!(scan.in_head());
        feed_bytewise(&mut scan, &frame_head(3, H2_HEADERS, 0));
        feed_bytewise(&mut scan, &[1, 2, 3]);
        feed_bytewise(&mut scan, &frame_head(2, H2_CONTINUATION, H2_END_HEADERS));
        assert!(
            scan.in_head(),
            "the block ends with its last frame's payload"
        );
        scan.feed(&[4, 5]);
        assert!(!scan.in_head());

        // Other frames, even with END_HEADERS' bit set, start no head.
        scan.feed(&frame_head(4, 0x0, H2_END_HEADERS | 0x1)); // DATA
        scan.feed(&[0; 4]);
        assert!(!scan.in_head());
        // A later block: in progress from its HEADERS frame until END_HEADERS.
        let mut later = frame_head(0, H2_HEADERS, 0);
        later.extend(frame_head(1, H2_CONTINUATION, 0));
        later.push(9);
        scan.feed(&later);
        assert!(scan.in_head());
        let mut end = frame_head(0, H2_CONTINUATION, H2_END_HEADERS);
        end.extend(frame_head(2, H2_HEADERS, H2_END_HEADERS));
        end.extend([1, 2]);
        scan.feed(&end);
        assert!(!scan.in_head(), "two blocks in one read");
    }
}
