//! Primary keys in memory: 128-bit hashes of key values, maps keyed by them, packed (hash, row) values that
//! sort to find a load's duplicate keys, and the duplicate check of a primary-key add.

use super::io::{Values, for_each_row};
use crate::error::JobError;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;
use xxhash_rust::xxh3::{Xxh3Default, xxh3_64_with_seed, xxh3_128};

/// The primary-key value of a record whose values start at `offset`, as a 128-bit XXH3 hash (of the value,
/// or of the length-prefixed values of a composite key): loads keep one per incoming row in memory, so it
/// must be small, and at 128 bits a collision among even billions of keys is not a practical concern.
pub(super) fn key_of(rec: &impl Values, offset: usize, pk: &[usize]) -> u128 {
    if let [i] = pk {
        return xxh3_128(rec.value(i + offset).unwrap_or(b""));
    }
    let mut h = Xxh3Default::new();
    for &i in pk {
        let v = rec.value(i + offset).unwrap_or(b"");
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    h.digest128()
}

/// A hash of a record's first `width` values (from `offset`): tells an unchanged upserted row apart.
pub(super) fn hash_of(rec: &impl Values, offset: usize, width: usize) -> u64 {
    let mut h = Xxh3Default::new();
    for i in 0..width {
        let v = rec.value(i + offset).unwrap_or(b"");
        h.update(&(v.len() as u64).to_le_bytes());
        h.update(v);
    }
    h.digest()
}

/// Key hashes are already uniformly spread, so the maps holding them use the hash's own bits as the bucket
/// hash instead of hashing it again with SipHash.
#[derive(Default)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u128 keys go in (below); anything else still gets a sound, if slower, hash.
        self.0 = xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u128(&mut self, key: u128) {
        self.0 = (key as u64) ^ ((key >> 64) as u64);
    }
}

pub(super) type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;
type KeySet = HashSet<u128, BuildHasherDefault<KeyHasher>>;

/// A row's key hash (its top 96 bits) and the row's index in the load, in one sortable value.
pub(super) fn pack_key(key: u128, index: u32) -> u128 {
    (key & !u128::from(u32::MAX)) | u128::from(index)
}

/// Packed keys bucketed by their top byte: duplicates share a bucket, and each bucket sorts in cache.
pub(super) struct PackedKeys(Vec<Vec<u128>>);

impl PackedKeys {
    pub(super) fn new() -> PackedKeys {
        PackedKeys(vec![Vec::new(); 256])
    }

    pub(super) fn push(&mut self, packed: u128) {
        self.0[(packed >> 120) as usize].push(packed);
    }
}

/// Sorts a load's packed keys and marks every row whose key comes again later (last-wins): a bit set over
/// row indexes, or None when no key repeats. Sorting flat arrays beat inserting into a hash map several
/// times over: at 10 M rows the map's cache misses were the largest cost of a load in the profile. The
/// buckets sort on two threads.
pub(super) fn duplicate_losers(keys: PackedKeys, rows: u64) -> Option<Vec<u64>> {
    let mut buckets = keys.0;
    let (a, b) = buckets.split_at_mut(128);
    std::thread::scope(|scope| {
        scope.spawn(|| a.iter_mut().for_each(|k| k.sort_unstable()));
        b.iter_mut().for_each(|k| k.sort_unstable());
    });
    let same_key = |a: u128, b: u128| (a ^ b) >> 32 == 0;
    let mut bits: Option<Vec<u64>> = None;
    for w in buckets.iter().flat_map(|k| k.windows(2)) {
        // Within a key the indexes ascend, so every entry but the key's last loses.
        if same_key(w[0], w[1]) {
            let bits = bits.get_or_insert_with(|| vec![0u64; rows.div_ceil(64) as usize]);
            let index = (w[0] & u128::from(u32::MAX)) as usize;
            bits[index / 64] |= 1 << (index % 64);
        }
    }
    bits
}

/// Whether the key columns hold a duplicate (the check of a primary-key add).
pub(crate) fn has_duplicate_keys(data: Option<&Path>, key: &[usize]) -> Result<bool, JobError> {
    let mut seen = KeySet::default();
    let mut dup = false;
    for_each_row(data, |_, rec| {
        if !seen.insert(key_of(rec, 1, key)) {
            dup = true;
            return Ok(false);
        }
        Ok(true)
    })?;
    Ok(dup)
}
