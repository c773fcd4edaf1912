use crate::VerityError;

/// The hash functions keel supports: those veritysetup users actually choose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    /// The kernel crypto API's name, which the superblock and table line use.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    pub fn from_name(name: &str) -> Result<HashAlgorithm, VerityError> {
        match name {
            "sha1" => Ok(HashAlgorithm::Sha1),
            "sha256" => Ok(HashAlgorithm::Sha256),
            "sha512" => Ok(HashAlgorithm::Sha512),
            other => Err(VerityError::InvalidParams(format!("hash algorithm {other:?} is not supported (sha256, sha512, sha1)"))),
        }
    }

    pub fn digest_size(self) -> usize {
        match self {
            HashAlgorithm::Sha1 => 20,
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
        }
    }
}

/// The largest digest of any supported algorithm.
pub const MAX_DIGEST_SIZE: usize = 64;
const MAX_SALT_SIZE: usize = 256;
const MIN_BLOCK_SIZE: u32 = 512;
const MAX_BLOCK_SIZE: u32 = 64 * 1024;

/// Which order the salt goes into each hash: the kernel's `version` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashType {
    /// Chrome OS: `hash(block || salt)`, digests packed without padding.
    ChromeOs = 0,
    /// The default: `hash(salt || block)`, each digest padded to a power of two.
    Normal = 1,
}

impl HashType {
    pub fn from_number(number: u32) -> Result<HashType, VerityError> {
        match number {
            0 => Ok(HashType::ChromeOs),
            1 => Ok(HashType::Normal),
            other => Err(VerityError::InvalidParams(format!("hash type {other} is not 0 or 1"))),
        }
    }

    pub fn number(self) -> u32 {
        self as u32
    }
}

/// Everything that determines the hash tree of a data area, apart from the data itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityParams {
    pub algorithm: HashAlgorithm,
    pub hash_type: HashType,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl VerityParams {
    /// veritysetup's defaults: sha256, format 1, 4096-byte blocks.
    pub fn new(data_blocks: u64, salt: Vec<u8>) -> VerityParams {
        VerityParams {
            algorithm: HashAlgorithm::Sha256,
            hash_type: HashType::Normal,
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks,
            salt,
        }
    }

    /// Checks the limits the kernel and veritysetup enforce, so that nothing later can
    /// divide by zero, overflow, or allocate without bound because of a bad value.
    pub fn validate(&self) -> Result<(), VerityError> {
        for (name, size) in [("data", self.data_block_size), ("hash", self.hash_block_size)] {
            if !size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) {
                return Err(VerityError::InvalidParams(format!(
                    "{name} block size {size} is not a power of two from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"
                )));
            }
        }
        if self.data_blocks == 0 {
            return Err(VerityError::InvalidParams("there are no data blocks".into()));
        }
        if self.data_blocks.checked_mul(u64::from(self.data_block_size)).is_none_or(|bytes| bytes > i64::MAX as u64) {
            return Err(VerityError::InvalidParams(format!("{} data blocks is too many", self.data_blocks)));
        }
        if self.salt.len() > MAX_SALT_SIZE {
            return Err(VerityError::InvalidParams(format!("salt is {} bytes, at most {MAX_SALT_SIZE} are allowed", self.salt.len())));
        }
        Ok(())
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size)
    }

    pub fn digest_size(&self) -> usize {
        self.algorithm.digest_size()
    }

    /// The bytes one digest occupies in a hash block: format 1 pads it to a power of two.
    pub fn digest_slot(&self) -> usize {
        match self.hash_type {
            HashType::Normal => self.digest_size().next_power_of_two(),
            HashType::ChromeOs => self.digest_size(),
        }
    }

    /// How many digests one hash block holds, as a power of two (the kernel's rule).
    /// Only for validated parameters: a block is then at least 512 bytes, a slot at most 64.
    pub(crate) fn digests_per_block_bits(&self) -> u32 {
        (self.hash_block_size as usize / self.digest_slot()).ilog2()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_the_kernel_rejects() {
        let good = VerityParams::new(8, vec![1; 32]);
        assert!(good.validate().is_ok());
        for bad in [
            VerityParams { data_block_size: 4095, ..good.clone() },
            VerityParams { hash_block_size: 256, ..good.clone() },
            VerityParams { hash_block_size: 128 * 1024, ..good.clone() },
            VerityParams { data_blocks: 0, ..good.clone() },
            VerityParams { data_blocks: u64::MAX, ..good.clone() },
            VerityParams { salt: vec![0; 257], ..good.clone() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} was accepted");
        }
    }
}
