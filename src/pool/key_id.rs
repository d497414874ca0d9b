//! Key ids: 24 alphanumeric characters drawn from a cryptographically secure generator.
//!
//! An id is the only thing a client needs to act on a key, so it is also the credential that proves the
//! client was handed that key: it must be unguessable. 24 characters over a 62-letter alphabet carry
//! about 142.9 bits, drawn by rejection sampling so that every character is exactly uniform.
//!
//! Ids are stored as fixed `[u8; 24]` arrays, never as `String`s: a key record holds its id inline,
//! and the wire codec writes it straight from there.

use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The length of every key id, in bytes (and characters: ids are ASCII).
pub const KEY_ID_LEN: usize = 24;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The largest multiple of 62 that fits in a byte: bytes at or above it are rejected so that
/// `byte % 62` is uniform.
const REJECT_FROM: u8 = 248;

/// A key's id: 24 characters of `[A-Za-z0-9]`.
///
/// The type guarantees its contents are valid: it is built only by [`KeyIdGenerator`] or by
/// [`KeyId::parse`], which checks every byte.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// Parses an id from the wire. `None` unless `bytes` is exactly 24 ASCII letters and digits.
    pub fn parse(bytes: &[u8]) -> Option<KeyId> {
        let array: [u8; KEY_ID_LEN] = bytes.try_into().ok()?;
        array.iter().all(u8::is_ascii_alphanumeric).then_some(KeyId(array))
    }

    /// The id as it goes on the wire.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Every constructor admits only ASCII alphanumerics, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

/// Draws fresh ids from a ChaCha12 stream seeded by the operating system.
///
/// One generator lives in each engine; it is only ever used under the engine's lock, so it needs no
/// synchronisation of its own.
pub struct KeyIdGenerator {
    rng: StdRng,
    buf: [u8; 64],
    pos: usize,
}

impl KeyIdGenerator {
    /// A generator seeded from the operating system's entropy source.
    pub fn from_os_entropy() -> KeyIdGenerator {
        KeyIdGenerator::from_rng(rand::make_rng())
    }

    /// A generator with a fixed seed, for reproducible tests only.
    pub fn from_seed(seed: u64) -> KeyIdGenerator {
        KeyIdGenerator::from_rng(StdRng::seed_from_u64(seed))
    }

    fn from_rng(rng: StdRng) -> KeyIdGenerator {
        KeyIdGenerator { rng, buf: [0; 64], pos: 64 }
    }

    /// A new random id. Each call costs about 25 random bytes, refilled 64 at a time.
    pub fn next_id(&mut self) -> KeyId {
        let mut id = [0u8; KEY_ID_LEN];
        for slot in &mut id {
            *slot = ALPHABET[usize::from(self.next_unbiased_byte() % 62)];
        }
        KeyId(id)
    }

    fn next_unbiased_byte(&mut self) -> u8 {
        loop {
            if self.pos == self.buf.len() {
                self.rng.fill_bytes(&mut self.buf);
                self.pos = 0;
            }
            let byte = self.buf[self.pos];
            self.pos += 1;
            if byte < REJECT_FROM {
                return byte;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn generated_ids_are_alphanumeric_and_parse_back() {
        let mut generator = KeyIdGenerator::from_os_entropy();
        for _ in 0..1000 {
            let id = generator.next_id();
            assert_eq!(KeyId::parse(id.as_bytes()), Some(id));
            assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        }
    }

    #[test]
    fn generated_ids_are_distinct() {
        let mut generator = KeyIdGenerator::from_os_entropy();
        let ids: HashSet<KeyId> = (0..100_000).map(|_| generator.next_id()).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn every_alphabet_character_is_about_equally_likely() {
        let mut generator = KeyIdGenerator::from_seed(7);
        let mut counts = [0u32; 256];
        let draws = 20_000;
        for _ in 0..draws {
            for &b in generator.next_id().as_bytes() {
                counts[usize::from(b)] += 1;
            }
        }
        let expected = f64::from(draws * KEY_ID_LEN as u32) / 62.0;
        for &letter in ALPHABET {
            let seen = f64::from(counts[usize::from(letter)]);
            assert!((seen - expected).abs() < expected * 0.05, "{} seen {seen}, expected {expected}", letter as char);
        }
    }

    #[test]
    fn parse_rejects_wrong_length_and_foreign_bytes() {
        assert_eq!(KeyId::parse(b""), None);
        assert_eq!(KeyId::parse(b"abc"), None);
        assert_eq!(KeyId::parse(b"aaaaaaaaaaaaaaaaaaaaaaaaa"), None);
        assert_eq!(KeyId::parse(b"aaaaaaaaaaaaaaaaaaaaaaa-"), None);
        assert_eq!(KeyId::parse(b"aaaaaaaaaaaaaaaaaaaaaa\xc3\xa9"), None);
        assert!(KeyId::parse(b"aaaaaaaaaaaaaaaaaaaaaaa0").is_some());
    }
}
