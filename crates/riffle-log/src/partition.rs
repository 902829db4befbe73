//! Key partitioning compatible with the Java client.
//!
//! Kafka's Java producer sends a keyed record to
//! `toPositive(murmur2(key)) % partitions`. Every writer of a topic must use the
//! same function, or records of one key land in different partitions and the
//! state kept per partition splits. librdkafka offers the same function as the
//! `murmur2_random` partitioner; the embedded log uses this one.

/// Kafka's 32-bit murmur2 hash (seed `0x9747b28c`), as in
/// `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values from the Java client's own unit test (UtilsTest.testMurmur2).
    #[test]
    fn matches_java_client() {
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
            (b"", 275646681),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partition_is_stable_and_in_range() {
        for p in 1..20 {
            for k in 0..200 {
                let key = format!("heater-{k}");
                let a = partition_for_key(key.as_bytes(), p);
                assert!((0..p).contains(&a));
                assert_eq!(a, partition_for_key(key.as_bytes(), p));
            }
        }
    }
}
