//! The tenant partitioner: every producer of the project places a record with this one
//! function, so a tenant's records of all three contexts share a partition number and every
//! join is local to one task.

/// Kafka's murmur2 hash (the Java client's `Utils.murmur2`), as a signed 32-bit value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h = SEED ^ (length as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in chunks.by_ref() {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a tenant's records: murmur2 of the tenant id's UTF-8 bytes, made
/// positive as Kafka does (`& 0x7fffffff`), modulo the partition count.
pub fn tenant_partition(tenant_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0, "a topic has at least one partition");
    (murmur2(tenant_id.as_bytes()) & 0x7fff_ffff) % partitions
}

/// The tenant id of a key `<tenant>/<entity>/<id>`.
pub fn tenant_of_key(key: &str) -> Option<&str> {
    key.split_once('/')
        .map(|(tenant, _)| tenant)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn matches_the_kafka_clients_test_vectors() {
        // The cases of Apache Kafka's UtilsTest.testMurmur2.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn the_key_is_not_what_places_a_record() {
        let partition = tenant_partition("coop-a", 6);
        for key in [
            "coop-a/member/1",
            "coop-a/contribution/7f3",
            "coop-a/policy/patronage",
        ] {
            assert_eq!(tenant_partition(tenant_of_key(key).unwrap(), 6), partition);
        }
    }

    proptest! {
        #[test]
        fn partitions_are_in_range(tenant in "[A-Za-z0-9._:-]{1,64}", partitions in 1i32..512) {
            let p = tenant_partition(&tenant, partitions);
            prop_assert!((0..partitions).contains(&p));
        }
    }
}
