//! A fast, non-cryptographic hasher for the allocator's maps keyed by ids (agent ids, framework ids, role names):
//! a pass looks ids up tens of thousands of times, and the standard SipHash costs more than the rest of a lookup.
//! The keys come from the master's own registries, not from a client choosing collisions, so DoS resistance is not
//! needed here. Each 8-byte word is mixed in with a folded multiply (the 128-bit product's halves xored, as wyhash
//! and foldhash do), which spreads every input bit over the whole state in both directions.

use std::hash::{BuildHasherDefault, Hasher};

/// `BuildHasher` for [`IdHasher`].
pub(super) type BuildIdHasher = BuildHasherDefault<IdHasher>;

#[derive(Default, Clone, Copy)]
pub(super) struct IdHasher {
    hash: u64,
}

/// An odd constant with well-spread bits (from the fractional part of π).
const MULTIPLIER: u64 = 0x243f_6a88_85a3_08d3;

impl IdHasher {
    fn add(&mut self, word: u64) {
        let product = u128::from(self.hash ^ word ^ MULTIPLIER) * u128::from(MULTIPLIER);
        self.hash = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(i.into());
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{BuildHasher, Hash};

    fn hash(s: &str) -> u64 {
        BuildIdHasher::default().hash_one(s)
    }

    #[test]
    fn equal_keys_hash_equal_and_near_keys_apart() {
        assert_eq!(hash("agent-00001"), hash("agent-00001"));
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|i| hash(&format!("agent-{i:05}"))).collect();
        assert_eq!(ids.len(), 10_000, "ids that differ in one byte do not collide");
        // A key and its prefix differ (str's Hash writes a terminator byte).
        assert_ne!(hash("ab"), hash("a"));
        let mut h = IdHasher::default();
        "x".hash(&mut h);
        assert_ne!(h.finish(), 0);
    }
}
