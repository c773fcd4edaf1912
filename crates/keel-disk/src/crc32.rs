/// `TABLES[0]` is the classic byte-at-a-time table; `TABLES[k][n]` is the CRC of byte `n`
/// followed by `k` zero bytes, so that eight bytes can be folded in at once.
static TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        tables[0][n] = c;
        n += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut n = 0;
        while n < 256 {
            let previous = tables[k - 1][n];
            tables[k][n] = (previous >> 8) ^ tables[0][(previous & 0xff) as usize];
            n += 1;
        }
        k += 1;
    }
    tables
};

/// CRC-32 (IEEE 802.3, reflected), as GPT headers and entry arrays use: public for tools
/// and tests that sign a header they edited. Eight bytes at a time (slicing-by-8): a byte
/// at a time waits on a table load per byte, and every read of a table checksums both
/// 16 KiB entry arrays, which is most of what the gpt fuzz target spends its time on.
pub fn crc32(bytes: &[u8]) -> u32 {
    let t = &TABLES;
    let mut chunks = bytes.chunks_exact(8);
    let mut crc = chunks.by_ref().fold(!0u32, |crc, chunk| {
        let low = crc ^ u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        let high = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
        let byte = |word: u32, shift: u32| ((word >> shift) & 0xff) as usize;
        t[7][byte(low, 0)]
            ^ t[6][byte(low, 8)]
            ^ t[5][byte(low, 16)]
            ^ t[4][byte(low, 24)]
            ^ t[3][byte(high, 0)]
            ^ t[2][byte(high, 8)]
            ^ t[1][byte(high, 16)]
            ^ t[0][byte(high, 24)]
    });
    for &byte in chunks.remainder() {
        crc = t[0][((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(super::crc32(b""), 0);
    }

    /// The CRC computed a bit at a time, straight from the polynomial.
    fn bitwise(bytes: &[u8]) -> u32 {
        !bytes.iter().fold(!0u32, |mut crc, &byte| {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { 0xedb8_8320 ^ (crc >> 1) } else { crc >> 1 };
            }
            crc
        })
    }

    #[test]
    fn eight_at_a_time_is_the_same_crc_at_every_length_and_alignment() {
        let bytes: Vec<u8> = (0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..8 {
            for end in start..bytes.len() {
                assert_eq!(super::crc32(&bytes[start..end]), bitwise(&bytes[start..end]), "bytes {start}..{end}");
            }
        }
    }
}
