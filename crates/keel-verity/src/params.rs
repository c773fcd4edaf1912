use crate::VerityError;

/// SHA-256 is the only algorithm so far; its digest fills a power-of-two slot exactly.
pub const DIGEST_SIZE: usize = 32;
pub const ALGORITHM: &str = "sha256";
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
    pub hash_type: HashType,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub salt: Vec<u8>,
}

impl VerityParams {
    /// veritysetup's defaults: format 1, 4096-byte blocks.
    pub fn new(data_blocks: u64, salt: Vec<u8>) -> VerityParams {
        VerityParams {
            hash_type: HashType::Normal,
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks,
            salt,
        }
    }

    pub fn algorithm(&self) -> &'static str {
        ALGORITHM
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
            return Err(VerityError::InvalidParams(format!(
                "salt is {} bytes, at most {MAX_SALT_SIZE} are allowed",
                self.salt.len()
            )));
        }
        Ok(())
    }

    pub fn data_bytes(&self) -> u64 {
        self.data_blocks * u64::from(self.data_block_size)
    }

    /// The bytes one digest occupies in a hash block.
    pub fn digest_slot(&self) -> usize {
        match self.hash_type {
            HashType::Normal => DIGEST_SIZE.next_power_of_two(),
            HashType::ChromeOs => DIGEST_SIZE,
        }
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
