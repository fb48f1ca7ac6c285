//! RecordIO, the framing of Mesos's event streams (`docs/recordio.md`): each record is its length in decimal ASCII,
//! a newline, then that many bytes (`20\n{"type":"HEARTBEAT"}`). [`encode`] frames one record; [`Decoder`] takes
//! bytes as they arrive, in chunks of any size, and hands back whole records, refusing a length above its cap so a
//! broken or hostile peer cannot make it buffer without bound.

/// The default cap on one record: 64 MiB, far above any state Agora sends (a SUBSCRIBED of a large cluster).
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024 * 1024;

/// A length header has at most this many digits (`u64::MAX` has 20).
const MAX_HEADER_DIGITS: usize = 20;

/// `record`, framed: `<len>\n<record>`.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 12);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

/// Why a stream is not valid RecordIO. After an error the decoder stays failed: the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("recordio: the length header {header:?} is not a decimal number")]
    BadHeader { header: String },
    #[error("recordio: record of {length} bytes exceeds the limit of {max} bytes")]
    TooLong { length: u64, max: usize },
    #[error("recordio: the stream ended inside a record ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
    #[error("recordio: the stream already failed")]
    Failed,
}

/// An incremental RecordIO decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next unread byte of `buf` is.
    start: usize,
    max_record: usize,
    failed: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_RECORD)
    }
}

impl Decoder {
    /// A decoder that refuses records longer than `max_record` bytes.
    pub fn new(max_record: usize) -> Decoder {
        Decoder { buf: Vec::new(), start: 0, max_record, failed: false }
    }

    /// Adds `bytes` and returns every record they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, RecordIoError> {
        if self.failed {
            return Err(RecordIoError::Failed);
        }
        self.buf.extend_from_slice(bytes);
        let mut records = Vec::new();
        loop {
            match self.next_record() {
                Ok(Some(r)) => records.push(r),
                Ok(None) => break,
                Err(e) => {
                    self.failed = true;
                    self.buf.clear();
                    self.start = 0;
                    return Err(e);
                }
            }
        }
        // Drop what was consumed, so the buffer holds at most one partial record.
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        Ok(records)
    }

    /// Checks that the stream ended between records.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        if self.failed {
            return Err(RecordIoError::Failed);
        }
        match self.buf.len() - self.start {
            0 => Ok(()),
            buffered => Err(RecordIoError::Truncated { buffered }),
        }
    }

    fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordIoError> {
        let pending = &self.buf[self.start..];
        let Some(newline) = pending.iter().take(MAX_HEADER_DIGITS + 1).position(|b| *b == b'\n') else {
            if pending.len() > MAX_HEADER_DIGITS || pending.iter().any(|b| !b.is_ascii_digit()) {
                let header = String::from_utf8_lossy(&pending[..pending.len().min(MAX_HEADER_DIGITS + 1)]);
                return Err(RecordIoError::BadHeader { header: header.into_owned() });
            }
            return Ok(None);
        };
        let header = &pending[..newline];
        let length = std::str::from_utf8(header)
            .ok()
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|h| h.parse::<u64>().ok())
            .ok_or_else(|| RecordIoError::BadHeader { header: String::from_utf8_lossy(header).into_owned() })?;
        if length > self.max_record as u64 {
            return Err(RecordIoError::TooLong { length, max: self.max_record });
        }
        let length = length as usize;
        let body = &pending[newline + 1..];
        if body.len() < length {
            return Ok(None);
        }
        let record = body[..length].to_vec();
        self.start += newline + 1 + length;
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn frames_and_unframes_records_split_anywhere() {
        let records: Vec<&[u8]> = vec![br#"{"type":"SUBSCRIBED"}"#, b"", br#"{"type":"HEARTBEAT"}"#];
        let stream: Vec<u8> = records.iter().flat_map(|r| encode(r)).collect();
        assert_eq!(&stream[..26], b"21\n{\"type\":\"SUBSCRIBED\"}0\n".as_slice());
        for chunk in 1..stream.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                got.extend(d.feed(piece).unwrap());
            }
            d.finish().unwrap();
            assert_eq!(got, records, "chunks of {chunk}");
        }
    }

    #[test]
    fn refuses_bad_headers_long_records_and_truncation() {
        let cases: &[(&[u8], RecordIoError)] = &[
            (b"x\n{}", RecordIoError::BadHeader { header: "x".into() }),
            (b"-1\n", RecordIoError::BadHeader { header: "-1".into() }),
            (b"\n", RecordIoError::BadHeader { header: "".into() }),
            (b" 2\n{}", RecordIoError::BadHeader { header: " 2".into() }),
            (b"2a", RecordIoError::BadHeader { header: "2a".into() }),
            (b"123456789012345678901", RecordIoError::BadHeader { header: "123456789012345678901".into() }),
            (b"99999999999999999999\n", RecordIoError::BadHeader { header: "99999999999999999999".into() }),
            (b"11\n", RecordIoError::TooLong { length: 11, max: 10 }),
        ];
        for (input, want) in cases {
            let mut d = Decoder::new(10);
            assert_eq!(d.feed(input).unwrap_err(), *want, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(d.feed(b"2\n{}").unwrap_err(), RecordIoError::Failed, "a failed stream stays failed");
        }
        let mut d = Decoder::new(10);
        assert!(d.feed(b"5\n{}").unwrap().is_empty());
        assert_eq!(d.finish().unwrap_err(), RecordIoError::Truncated { buffered: 4 });
    }

    proptest! {
        /// Arbitrary bytes in arbitrary chunks never panic, never yield a record over the cap, and once an error is
        /// reported every later feed fails too.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), cut in 1usize..64) {
            let mut d = Decoder::new(100);
            let mut failed = false;
            for piece in bytes.chunks(cut) {
                match d.feed(piece) {
                    Ok(records) => {
                        prop_assert!(!failed);
                        prop_assert!(records.iter().all(|r| r.len() <= 100));
                    }
                    Err(_) => failed = true,
                }
            }
            let _ = d.finish();
        }

        /// Any records, framed and cut anywhere, come back whole and in order.
        #[test]
        fn framed_records_round_trip(records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8), cut in 1usize..50) {
            let stream: Vec<u8> = records.iter().flat_map(|r| encode(r)).collect();
            let mut d = Decoder::new(200);
            let mut got = Vec::new();
            for piece in stream.chunks(cut) {
                got.extend(d.feed(piece).unwrap());
            }
            prop_assert!(d.finish().is_ok());
            prop_assert_eq!(got, records);
        }
    }
}
