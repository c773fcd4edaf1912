use crate::{HashAlgorithm, HashType, VerityError, VerityParams};
use static_assertions::const_assert_eq;

pub const SUPERBLOCK_SIZE: usize = 512;
const SIGNATURE: &[u8; 8] = b"verity\0\0";
const SUPERBLOCK_VERSION: u32 = 1;
const SALT_FIELD: usize = 256;
const ALGORITHM_FIELD: usize = 32;
// signature, version, hash_type, uuid, algorithm, block sizes, data_blocks, salt_size,
// pad, salt, pad: the packed C struct that veritysetup writes.
const_assert_eq!(8 + 4 + 4 + 16 + ALGORITHM_FIELD + 4 + 4 + 8 + 2 + 6 + SALT_FIELD + 168, SUPERBLOCK_SIZE);
const SALT_OFFSET: usize = 88;

/// The 512-byte header veritysetup writes at the start of the hash area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    pub params: VerityParams,
}

impl Superblock {
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let params = &self.params;
        let mut bytes = [0u8; SUPERBLOCK_SIZE];
        bytes[0..8].copy_from_slice(SIGNATURE);
        bytes[8..12].copy_from_slice(&SUPERBLOCK_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&params.hash_type.number().to_le_bytes());
        bytes[16..32].copy_from_slice(&self.uuid);
        let algorithm = params.algorithm.name().as_bytes();
        bytes[32..32 + algorithm.len()].copy_from_slice(algorithm);
        bytes[64..68].copy_from_slice(&params.data_block_size.to_le_bytes());
        bytes[68..72].copy_from_slice(&params.hash_block_size.to_le_bytes());
        bytes[72..80].copy_from_slice(&params.data_blocks.to_le_bytes());
        // validate() caps the salt at the field's 256 bytes, so both casts are lossless.
        let salt_len = params.salt.len().min(SALT_FIELD);
        bytes[80..82].copy_from_slice(&(salt_len as u16).to_le_bytes());
        bytes[SALT_OFFSET..SALT_OFFSET + salt_len].copy_from_slice(&params.salt[..salt_len]);
        bytes
    }

    /// Parses untrusted bytes: every field is checked, nothing is trusted to be sane.
    pub fn parse(bytes: &[u8]) -> Result<Superblock, VerityError> {
        let bad = |why: String| VerityError::BadSuperblock(why);
        let bytes: &[u8; SUPERBLOCK_SIZE] = bytes
            .get(..SUPERBLOCK_SIZE)
            .and_then(|head| head.try_into().ok())
            .ok_or_else(|| bad(format!("need {SUPERBLOCK_SIZE} bytes, got {}", bytes.len())))?;
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        if &bytes[0..8] != SIGNATURE {
            return Err(bad("no \"verity\" signature".into()));
        }
        let version = u32_at(8);
        if version != SUPERBLOCK_VERSION {
            return Err(bad(format!("version {version} is not {SUPERBLOCK_VERSION}")));
        }
        let hash_type = HashType::from_number(u32_at(12)).map_err(|e| bad(e.to_string()))?;
        let algorithm_field = &bytes[32..32 + ALGORITHM_FIELD];
        let name_len = algorithm_field.iter().position(|&b| b == 0).unwrap_or(ALGORITHM_FIELD);
        let algorithm = HashAlgorithm::from_name(&String::from_utf8_lossy(&algorithm_field[..name_len])).map_err(|e| bad(e.to_string()))?;
        let salt_len = usize::from(u16::from_le_bytes([bytes[80], bytes[81]]));
        if salt_len > SALT_FIELD {
            return Err(bad(format!("salt size {salt_len} is larger than {SALT_FIELD}")));
        }
        // veritysetup writes zeros in every unused byte. The superblock has no checksum, so
        // insisting on them is what turns a flipped bit there into an error.
        let unused = [32 + name_len..64, 82..SALT_OFFSET, SALT_OFFSET + salt_len..SUPERBLOCK_SIZE];
        if let Some(range) = unused.into_iter().find(|range| bytes[range.clone()].iter().any(|&b| b != 0)) {
            return Err(bad(format!("bytes {}..{} should be zero", range.start, range.end)));
        }
        let mut data_blocks = [0u8; 8];
        data_blocks.copy_from_slice(&bytes[72..80]);
        let params = VerityParams {
            algorithm,
            hash_type,
            data_block_size: u32_at(64),
            hash_block_size: u32_at(68),
            data_blocks: u64::from_le_bytes(data_blocks),
            salt: bytes[SALT_OFFSET..SALT_OFFSET + salt_len].to_vec(),
        };
        params.validate().map_err(|e| bad(e.to_string()))?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[16..32]);
        Ok(Superblock { uuid, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock { uuid: [7; 16], params: VerityParams::new(1000, vec![0xab; 32]) }
    }

    #[test]
    fn round_trips() {
        let superblock = sample();
        assert_eq!(Superblock::parse(&superblock.to_bytes()).unwrap(), superblock);
    }

    #[test]
    fn rejects_each_broken_field() {
        let good = sample().to_bytes();
        let broken = |at: usize, value: &[u8]| {
            let mut bytes = good;
            bytes[at..at + value.len()].copy_from_slice(value);
            Superblock::parse(&bytes)
        };
        assert!(broken(0, b"Verity").is_err());
        assert!(broken(8, &2u32.to_le_bytes()).is_err());
        assert!(broken(12, &7u32.to_le_bytes()).is_err());
        assert!(broken(32, b"md5\0").is_err());
        assert!(broken(64, &3000u32.to_le_bytes()).is_err());
        assert!(broken(68, &0u32.to_le_bytes()).is_err());
        assert!(broken(72, &0u64.to_le_bytes()).is_err());
        assert!(broken(80, &257u16.to_le_bytes()).is_err());
        assert!(Superblock::parse(&good[..100]).is_err());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut random = keel_test_support::XorShift::new(0x9e3779b97f4a7c15);
        for round in 0..20_000 {
            let mut bytes = sample().to_bytes();
            for _ in 0..1 + round % 8 {
                let state = random.next_u64();
                bytes[(state % SUPERBLOCK_SIZE as u64) as usize] = (state >> 32) as u8;
            }
            if let Ok(parsed) = Superblock::parse(&bytes) {
                assert!(parsed.params.validate().is_ok());
            }
        }
    }
}
