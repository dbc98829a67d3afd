//! The sticky per-mille bucket: `murmur3_x86_32(salt ++ key, seed 0) % 1000`.
//!
//! The formula is part of the user-facing contract: any other system (a client, a data
//! job, another gateway) must be able to compute the same bucket, so it is fixed here
//! and tested against published MurmurHash3 vectors.

use std::io::Read;

/// Number of buckets a user key is hashed into; `permille = N` holds for buckets `< N`.
pub const BUCKETS: u32 = 1000;

/// MurmurHash3 x86 32-bit of `salt ++ key` with the given seed.
///
/// The two slices are chained as readers rather than concatenated, so hashing never
/// allocates.
pub fn murmur3_x86_32(salt: &[u8], key: &[u8], seed: u32) -> u32 {
    let mut input = salt.chain(key);
    // Reading from in-memory slices cannot fail.
    murmur3::murmur3_32(&mut input, seed).expect("in-memory read")
}

/// The bucket (0..1000) of a user key under a salt.
pub fn bucket(salt: &[u8], key: &[u8]) -> u16 {
    bucket_of_hash(murmur3_x86_32(salt, key, 0))
}

/// The bucket of a key whose hash is `hash`.
pub fn bucket_of_hash(hash: u32) -> u16 {
    (hash % BUCKETS) as u16
}

/// How many user groups a rollout's cohorts are recorded in.
pub const USER_GROUPS: usize = 16;

/// The user group (0..16) of a key whose hash is `hash`: its top four bits, which the
/// bucket (the hash mod 1000) hardly depends on, so every bucket range, even a single
/// bucket, spreads its users over all groups. A rollout's judge uses the groups to
/// measure how much users, not requests, vary.
pub fn user_group(hash: u32) -> u8 {
    (hash >> 28) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published vectors (SMHasher's verification set, as also used by Python's `mmh3`
    /// and Guava's `murmur3_32_fixed`).
    const VECTORS: &[(&[u8], u32, u32)] = &[
        (b"", 0, 0),
        (b"", 1, 0x514E_28B7),
        (b"", 0xffff_ffff, 0x81F1_6F39),
        (b"\xff\xff\xff\xff", 0, 0x7629_3B50),
        (b"\x21\x43\x65\x87", 0, 0xF55B_516B),
        (b"\x21\x43\x65\x87", 0x5082_EDEE, 0x2362_F9DE),
        (b"\x21\x43\x65", 0, 0x7E4A_8634),
        (b"\x21\x43", 0, 0xA0F7_B07A),
        (b"\x21", 0, 0x7266_1CF4),
        (b"\x00\x00\x00\x00", 0, 0x2362_F9DE),
        (b"\x00\x00\x00", 0, 0x85F0_B427),
        (b"\x00\x00", 0, 0x30F4_C306),
        (b"\x00", 0, 0x514E_28B7),
        (b"aaaa", 0x9747_b28c, 0x5A97_808A),
        (b"Hello, world!", 0x9747_b28c, 0x2488_4CBA),
        (
            b"The quick brown fox jumps over the lazy dog",
            0x9747_b28c,
            0x2FA8_26CD,
        ),
        (b"Hello, world!", 0, 0xC036_3E43),
        (b"foo", 0, 0xF6A5_C420),
    ];

    #[test]
    fn matches_published_vectors() {
        for &(input, seed, want) in VECTORS {
            assert_eq!(
                murmur3_x86_32(b"", input, seed),
                want,
                "input {input:?} seed {seed:#x}"
            );
        }
    }

    #[test]
    fn salt_is_a_plain_prefix_at_every_split_point() {
        for &(input, seed, want) in VECTORS {
            for split in 0..=input.len() {
                let (salt, key) = input.split_at(split);
                assert_eq!(
                    murmur3_x86_32(salt, key, seed),
                    want,
                    "split {split} of {input:?}"
                );
            }
        }
    }

    #[test]
    fn bucket_is_the_hash_mod_1000() {
        assert_eq!(
            bucket(b"", b"Hello, world!"),
            (0xC036_3E43u32 % 1000) as u16
        );
        assert_eq!(
            bucket(b"Hello, ", b"world!"),
            (0xC036_3E43u32 % 1000) as u16
        );
        for i in 0..10_000u32 {
            assert!(bucket(b"s", i.to_string().as_bytes()) < 1000);
        }
    }

    #[test]
    fn buckets_are_roughly_uniform() {
        let mut counts = [0u32; 10];
        for i in 0..100_000u32 {
            counts[bucket(b"", i.to_string().as_bytes()) as usize / 100] += 1;
        }
        for c in counts {
            assert!(
                (9_000..11_000).contains(&c),
                "decile count {c} of 100000: {counts:?}"
            );
        }
    }
}
