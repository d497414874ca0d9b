//! The bytes on disk: framed, checksummed records, and what a record holds.
//!
//! Every record, in the log and in a snapshot, is framed the same way:
//!
//! ```text
//! length: u32 LE   bytes of payload, 1 ..= MAX_PAYLOAD
//! crc:    u32 LE   CRC-32 (IEEE, crc32fast) of the payload
//! payload: kind: u8, then the kind's fields
//! ```
//!
//! A length that runs past the end of the file, or a checksum that does not match, is how a torn or
//! damaged record shows itself; [`next_frame`] tells which. Integers are little-endian; times are Unix
//! epoch milliseconds; a pool name is a `u8` length and its bytes; an id is its 24 ASCII characters.
//!
//! | kind | record | fields |
//! |---|---|---|
//! | 1 | key created (log) | pool, key image |
//! | 2 | key placed (log) | pool, id, leases u32, place |
//! | 3 | key kept alive (log) | pool, id, alive_until u64 |
//! | 4 | key deleted (log) | pool, id |
//! | 16 | log header | magic `KPLOG001`, generation u64 |
//! | 17 | snapshot header | magic `KPSNAP01`, generation u64, written_at u64, next_token u64 |
//! | 18 | snapshot keys | pool, count u32, count key images |
//! | 19 | snapshot end | keys u64 |
//! | 20 | snapshot pool | pool, keys u64 (how many of its keys follow, about: a hint to make room) |
//!
//! A key image is: id, created u64, alive_until u64 (`u64::MAX`: never), leases u32, place, then a
//! secret flag u8 (0 none; 1 followed by keep-alive mode u8 (0 the pool's, 1 never, 2 its own followed by
//! the window in ms as u64), length u32 and the secret's bytes). A place is a tag u8: 0 free; 1 blocked
//! followed by until u64, token u64, autorel u8; 2 delayed followed by until u64.

use crate::pool::{Change, KeepaliveMode, KeyId, KeyImage, PlaceImage, KEY_ID_LEN};

/// Bytes of frame before the payload.
pub const FRAME_HEADER: usize = 8;

/// The longest payload a frame may carry. A snapshot writes keys in chunks well under it; a length
/// above it is damage, not data.
pub const MAX_PAYLOAD: usize = 64 << 20;

const KIND_KEY: u8 = 1;
const KIND_PLACED: u8 = 2;
const KIND_KEPT_ALIVE: u8 = 3;
const KIND_DELETED: u8 = 4;
const KIND_LOG_HEADER: u8 = 16;
const KIND_SNAPSHOT_HEADER: u8 = 17;
const KIND_SNAPSHOT_KEYS: u8 = 18;
const KIND_SNAPSHOT_END: u8 = 19;
const KIND_SNAPSHOT_POOL: u8 = 20;

const LOG_MAGIC: &[u8; 8] = b"KPLOG001";
const SNAPSHOT_MAGIC: &[u8; 8] = b"KPSNAP01";

/// A payload that does not decode: the bytes passed their checksum but do not say anything this
/// version understands.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed record: {0}")]
pub struct Malformed(pub &'static str);

/// One decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Change {
        pool: &'a str,
        change: Change<'a>,
    },
    LogHeader {
        generation: u64,
    },
    SnapshotHeader {
        generation: u64,
        written_at_ms: u64,
        next_token: u64,
    },
    /// `count` key images of `pool`; read them with [`KeyImages`].
    SnapshotKeys {
        pool: &'a str,
        images: KeyImages<'a>,
    },
    SnapshotEnd {
        keys: u64,
    },
    /// A pool's keys follow, about `keys` of them (the count when the walk reached the pool).
    SnapshotPool {
        pool: &'a str,
        keys: u64,
    },
}

/// Appends one framed record whose payload `write` produces.
fn framed(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER]);
    write(out);
    let payload = &out[start + FRAME_HEADER..];
    let length = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends the record of one change to `pool`.
pub fn put_change(out: &mut Vec<u8>, pool: &str, change: &Change<'_>) {
    framed(out, |out| match change {
        Change::Key(image) => {
            out.push(KIND_KEY);
            put_name(out, pool);
            put_image(out, image);
        }
        Change::Placed { id, leases, place } => {
            out.push(KIND_PLACED);
            put_name(out, pool);
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&leases.to_le_bytes());
            put_place(out, place);
        }
        Change::KeptAlive { id, alive_until_ms } => {
            out.push(KIND_KEPT_ALIVE);
            put_name(out, pool);
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&alive_until_ms.to_le_bytes());
        }
        Change::Deleted { id } => {
            out.push(KIND_DELETED);
            put_name(out, pool);
            out.extend_from_slice(id.as_bytes());
        }
    });
}

/// Appends the header that opens every log file.
pub fn put_log_header(out: &mut Vec<u8>, generation: u64) {
    framed(out, |out| {
        out.push(KIND_LOG_HEADER);
        out.extend_from_slice(LOG_MAGIC);
        out.extend_from_slice(&generation.to_le_bytes());
    });
}

/// Appends the header that opens every snapshot.
pub fn put_snapshot_header(out: &mut Vec<u8>, generation: u64, written_at_ms: u64, next_token: u64) {
    framed(out, |out| {
        out.push(KIND_SNAPSHOT_HEADER);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&generation.to_le_bytes());
        out.extend_from_slice(&written_at_ms.to_le_bytes());
        out.extend_from_slice(&next_token.to_le_bytes());
    });
}

/// Appends a record of `count` keys of `pool` whose images are `images` (made by [`put_image`]).
pub fn put_snapshot_keys(out: &mut Vec<u8>, pool: &str, count: u32, images: &[u8]) {
    framed(out, |out| {
        out.push(KIND_SNAPSHOT_KEYS);
        put_name(out, pool);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(images);
    });
}

/// Appends the record that opens a pool's keys in a snapshot.
pub fn put_snapshot_pool(out: &mut Vec<u8>, pool: &str, keys: u64) {
    framed(out, |out| {
        out.push(KIND_SNAPSHOT_POOL);
        put_name(out, pool);
        out.extend_from_slice(&keys.to_le_bytes());
    });
}

/// Appends the record that closes a complete snapshot.
pub fn put_snapshot_end(out: &mut Vec<u8>, keys: u64) {
    framed(out, |out| {
        out.push(KIND_SNAPSHOT_END);
        out.extend_from_slice(&keys.to_le_bytes());
    });
}

/// Appends one key image, unframed (see [`put_snapshot_keys`]).
pub fn put_image(out: &mut Vec<u8>, image: &KeyImage<'_>) {
    out.extend_from_slice(image.id.as_bytes());
    out.extend_from_slice(&image.created_ms.to_le_bytes());
    out.extend_from_slice(&image.alive_until_ms.to_le_bytes());
    out.extend_from_slice(&image.leases.to_le_bytes());
    put_place(out, &image.place);
    match image.secret {
        None => out.push(0),
        Some((bytes, mode)) => {
            out.push(1);
            match mode {
                KeepaliveMode::Pool => out.push(0),
                KeepaliveMode::Never => out.push(1),
                KeepaliveMode::Window(ms) => {
                    out.push(2);
                    out.extend_from_slice(&ms.to_le_bytes());
                }
            }
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

fn put_place(out: &mut Vec<u8>, place: &PlaceImage) {
    match *place {
        PlaceImage::Free => out.push(0),
        PlaceImage::Blocked { until_ms, token, autorel } => {
            out.push(1);
            out.extend_from_slice(&until_ms.to_le_bytes());
            out.extend_from_slice(&token.to_le_bytes());
            out.push(u8::from(autorel));
        }
        PlaceImage::Delayed { until_ms } => {
            out.push(2);
            out.extend_from_slice(&until_ms.to_le_bytes());
        }
    }
}

fn put_name(out: &mut Vec<u8>, pool: &str) {
    // Pool names are at most 64 bytes (`MAX_POOL_NAME`), so the length fits.
    out.push(pool.len() as u8);
    out.extend_from_slice(pool.as_bytes());
}

/// What is at an offset of a file of records.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole record whose checksum matches: its payload, and the offset of the next record.
    Record(&'a [u8], usize),
    /// The end of the data: the end of the file, or only zero bytes from here on.
    End,
    /// A record cut short by the end of the file, or a bad one with nothing but zeros after it: what a
    /// crash in the middle of a write leaves.
    Torn,
    /// A bad record with data after it: damage, not a crash.
    Damaged,
}

/// The frame at `offset` of `data`.
pub fn next_frame(data: &[u8], offset: usize) -> Frame<'_> {
    let rest = &data[offset.min(data.len())..];
    // Only a record that does not check out pays for looking at the rest of the file.
    let zeros = |bytes: &[u8]| bytes.iter().all(|&b| b == 0);
    if rest.len() < FRAME_HEADER {
        return if zeros(rest) { Frame::End } else { Frame::Torn };
    }
    let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if length == 0 || length > MAX_PAYLOAD {
        return if zeros(rest) { Frame::End } else { Frame::Damaged };
    }
    let Some(payload) = rest.get(FRAME_HEADER..FRAME_HEADER + length) else {
        // Cut short by the end of the file: a crash mid-write, unless a whole record follows, in which
        // case the length itself is damaged and cutting here would throw acknowledged changes away.
        return if whole_record_after(rest) { Frame::Damaged } else { Frame::Torn };
    };
    if crc32fast::hash(payload) == crc {
        return Frame::Record(payload, offset + FRAME_HEADER + length);
    }
    if zeros(&rest[FRAME_HEADER + length..]) {
        Frame::Torn
    } else {
        Frame::Damaged
    }
}

/// Whether a whole record with a matching checksum starts anywhere after the first byte of `rest`. Only a
/// record that does not check out pays for this; a torn tail, the common case, is short.
fn whole_record_after(rest: &[u8]) -> bool {
    (1..rest.len().saturating_sub(FRAME_HEADER)).any(|at| {
        let header = &rest[at..at + FRAME_HEADER];
        let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = at + FRAME_HEADER;
        (1..=MAX_PAYLOAD).contains(&length)
            && rest.len() - start >= length
            // A record's payload starts with its kind: a cheap filter before the checksum.
            && matches!(rest[start], KIND_KEY..=KIND_DELETED | KIND_LOG_HEADER..=KIND_SNAPSHOT_POOL)
            && crc32fast::hash(&rest[start..start + length]) == crc
    })
}

/// Decodes a payload that passed its checksum.
pub fn decode(payload: &[u8]) -> Result<Record<'_>, Malformed> {
    let mut r = Reader(payload);
    let record = match r.u8()? {
        KIND_KEY => {
            let pool = r.name()?;
            Record::Change { pool, change: Change::Key(r.image()?) }
        }
        KIND_PLACED => {
            let pool = r.name()?;
            let id = r.id()?;
            let leases = r.u32()?;
            let place = r.place()?;
            Record::Change { pool, change: Change::Placed { id, leases, place } }
        }
        KIND_KEPT_ALIVE => {
            let pool = r.name()?;
            let id = r.id()?;
            Record::Change { pool, change: Change::KeptAlive { id, alive_until_ms: r.u64()? } }
        }
        KIND_DELETED => {
            let pool = r.name()?;
            Record::Change { pool, change: Change::Deleted { id: r.id()? } }
        }
        KIND_LOG_HEADER => {
            if r.bytes(8)? != LOG_MAGIC {
                return Err(Malformed("not a keypool log"));
            }
            Record::LogHeader { generation: r.u64()? }
        }
        KIND_SNAPSHOT_HEADER => {
            if r.bytes(8)? != SNAPSHOT_MAGIC {
                return Err(Malformed("not a keypool snapshot"));
            }
            Record::SnapshotHeader { generation: r.u64()?, written_at_ms: r.u64()?, next_token: r.u64()? }
        }
        KIND_SNAPSHOT_KEYS => {
            let pool = r.name()?;
            let count = r.u32()?;
            let images = KeyImages { reader: Reader(r.0), left: count };
            return Ok(Record::SnapshotKeys { pool, images });
        }
        KIND_SNAPSHOT_END => Record::SnapshotEnd { keys: r.u64()? },
        KIND_SNAPSHOT_POOL => {
            let pool = r.name()?;
            Record::SnapshotPool { pool, keys: r.u64()? }
        }
        _ => return Err(Malformed("unknown record kind")),
    };
    if !r.0.is_empty() {
        return Err(Malformed("bytes after the record's fields"));
    }
    Ok(record)
}

/// The key images of a snapshot keys record, decoded one at a time.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyImages<'a> {
    reader: Reader<'a>,
    left: u32,
}

impl<'a> Iterator for KeyImages<'a> {
    type Item = Result<KeyImage<'a>, Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return (!self.reader.0.is_empty()).then_some(Err(Malformed("bytes after the last key")));
        }
        self.left -= 1;
        let image = self.reader.image();
        if image.is_err() {
            self.left = 0;
            self.reader.0 = &[];
        }
        Some(image)
    }
}

/// Reads fields off the front of a payload, failing rather than panicking when it runs short.
#[derive(Debug, PartialEq, Eq)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("record cut short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.bytes(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let bytes = self.bytes(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(array))
    }

    fn name(&mut self) -> Result<&'a str, Malformed> {
        let length = usize::from(self.u8()?);
        let bytes = self.bytes(length)?;
        if !crate::pool::valid_pool_name(bytes) {
            return Err(Malformed("invalid pool name"));
        }
        std::str::from_utf8(bytes).map_err(|_| Malformed("invalid pool name"))
    }

    fn id(&mut self) -> Result<KeyId, Malformed> {
        KeyId::parse(self.bytes(KEY_ID_LEN)?).ok_or(Malformed("invalid key id"))
    }

    fn place(&mut self) -> Result<PlaceImage, Malformed> {
        Ok(match self.u8()? {
            0 => PlaceImage::Free,
            1 => PlaceImage::Blocked { until_ms: self.u64()?, token: self.u64()?, autorel: self.u8()? != 0 },
            2 => PlaceImage::Delayed { until_ms: self.u64()? },
            _ => return Err(Malformed("unknown place")),
        })
    }

    fn image(&mut self) -> Result<KeyImage<'a>, Malformed> {
        let id = self.id()?;
        let created_ms = self.u64()?;
        let alive_until_ms = self.u64()?;
        let leases = self.u32()?;
        let place = self.place()?;
        let secret = match self.u8()? {
            0 => None,
            1 => {
                let mode = match self.u8()? {
                    0 => KeepaliveMode::Pool,
                    1 => KeepaliveMode::Never,
                    2 => KeepaliveMode::Window(self.u64()?),
                    _ => return Err(Malformed("unknown keep-alive mode")),
                };
                let length = self.u32()? as usize;
                Some((self.bytes(length)?, mode))
            }
            _ => return Err(Malformed("unknown secret flag")),
        };
        Ok(KeyImage { id, created_ms, alive_until_ms, leases, secret, place })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> KeyId {
        KeyId::parse(c.to_string().repeat(KEY_ID_LEN).as_bytes()).expect("a valid id")
    }

    fn changes() -> Vec<Change<'static>> {
        vec![
            Change::Key(KeyImage {
                id: id('a'),
                created_ms: 1,
                alive_until_ms: 2,
                leases: 3,
                secret: None,
                place: PlaceImage::Free,
            }),
            Change::Key(KeyImage {
                id: id('b'),
                created_ms: 10,
                alive_until_ms: u64::MAX,
                leases: 0,
                secret: Some((b"sk-live-123", KeepaliveMode::Window(90_000))),
                place: PlaceImage::Delayed { until_ms: 77 },
            }),
            Change::Placed {
                id: id('a'),
                leases: 4,
                place: PlaceImage::Blocked { until_ms: 5, token: 6, autorel: true },
            },
            Change::KeptAlive { id: id('a'), alive_until_ms: 9 },
            Change::Deleted { id: id('b') },
        ]
    }

    #[test]
    fn every_change_decodes_to_itself() {
        for change in changes() {
            let mut out = Vec::new();
            put_change(&mut out, "team-a", &change);
            let Frame::Record(payload, next) = next_frame(&out, 0) else { panic!("a whole record") };
            assert_eq!(next, out.len());
            assert_eq!(decode(payload), Ok(Record::Change { pool: "team-a", change }));
        }
    }

    #[test]
    fn snapshot_keys_decode_one_by_one() {
        let images: Vec<KeyImage<'static>> =
            changes().into_iter().filter_map(|c| if let Change::Key(image) = c { Some(image) } else { None }).collect();
        let mut body = Vec::new();
        for image in &images {
            put_image(&mut body, image);
        }
        let mut out = Vec::new();
        put_snapshot_keys(&mut out, "default", images.len() as u32, &body);
        let Frame::Record(payload, _) = next_frame(&out, 0) else { panic!("a whole record") };
        let Ok(Record::SnapshotKeys { pool, images: decoded }) = decode(payload) else { panic!("keys") };
        assert_eq!(pool, "default");
        assert_eq!(decoded.collect::<Result<Vec<_>, _>>(), Ok(images));
    }

    #[test]
    fn a_cut_record_is_torn_and_a_flipped_byte_before_more_data_is_damage() {
        let mut out = Vec::new();
        for change in changes() {
            put_change(&mut out, "default", &change);
        }
        let Frame::Record(_, second) = next_frame(&out, 0) else { panic!("a whole record") };
        for cut in second + 1..out.len() {
            // Cutting inside the second record leaves it torn, unless the cut is at a record boundary.
            let frame = next_frame(&out[..cut], second);
            assert!(matches!(frame, Frame::Torn | Frame::Record(..)), "cut at {cut}: {frame:?}");
        }
        let mut flipped = out.clone();
        flipped[second + FRAME_HEADER + 3] ^= 0x40;
        assert_eq!(next_frame(&flipped, second), Frame::Damaged);
        let mut long_length = out.clone();
        long_length[second + 2] ^= 0x01;
        assert_eq!(next_frame(&long_length, second), Frame::Damaged, "a length past the end, whole records after");
        assert_eq!(next_frame(&long_length[..second + 12], second), Frame::Torn, "nothing whole after: torn");
        let mut zero_tail = out[..second].to_vec();
        zero_tail.extend_from_slice(&[0; 100]);
        assert_eq!(next_frame(&zero_tail, second), Frame::End);
    }

    #[test]
    fn garbage_payloads_fail_to_decode_without_panicking() {
        for payload in [&b""[..], b"\x01", b"\x02\x07default", b"\x10KPLOG00", b"\xff", b"\x12\x07default\x05\0\0\0"] {
            match decode(payload) {
                Ok(Record::SnapshotKeys { images, .. }) => {
                    assert!(images.into_iter().any(|image| image.is_err()));
                }
                Ok(record) => panic!("decoded {record:?}"),
                Err(_) => {}
            }
        }
    }
}
