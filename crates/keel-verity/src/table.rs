use crate::{encode_hex, Digest, VerityParams};

/// What the kernel does when a block does not match its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CorruptionMode {
    /// Fail the read with EIO (the kernel's default).
    Eio,
    RestartOnCorruption,
    PanicOnCorruption,
}

/// A `verity` target line for `DM_TABLE_LOAD`, in the kernel's documented form:
/// `<version> <data_dev> <hash_dev> <dbs> <hbs> <data_blocks> <hash_start> <alg> <root> <salt> [opts]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLine {
    pub data_device: String,
    pub hash_device: String,
    /// First block of the tree on the hash device, in hash blocks.
    pub hash_start_block: u64,
    pub params: VerityParams,
    pub root: Digest,
    pub corruption: CorruptionMode,
    /// Blocks that are all zero read as zeros without being hashed (for sparse images).
    pub ignore_zero_blocks: bool,
    /// Each data block is verified only on its first read.
    pub check_at_most_once: bool,
}

impl TableLine {
    /// Sectors of 512 bytes the device covers: the `length` of the table entry.
    pub fn data_sectors(&self) -> u64 {
        self.params.data_bytes() / 512
    }

    /// The target parameters, without the leading `start length verity` of a table.
    pub fn target_params(&self) -> String {
        let params = &self.params;
        let salt = if params.salt.is_empty() { "-".to_string() } else { encode_hex(&params.salt) };
        let mut line = format!(
            "{} {} {} {} {} {} {} {} {} {}",
            params.hash_type.number(),
            self.data_device,
            self.hash_device,
            params.data_block_size,
            params.hash_block_size,
            params.data_blocks,
            self.hash_start_block,
            params.algorithm.name(),
            encode_hex(&self.root),
            salt,
        );
        let mut options = Vec::new();
        match self.corruption {
            CorruptionMode::Eio => {}
            CorruptionMode::RestartOnCorruption => options.push("restart_on_corruption"),
            CorruptionMode::PanicOnCorruption => options.push("panic_on_corruption"),
        }
        if self.ignore_zero_blocks {
            options.push("ignore_zero_blocks");
        }
        if self.check_at_most_once {
            options.push("check_at_most_once");
        }
        if !options.is_empty() {
            line.push_str(&format!(" {} {}", options.len(), options.join(" ")));
        }
        line
    }
}

impl std::fmt::Display for TableLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0 {} verity {}", self.data_sectors(), self.target_params())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_kernel_documentation_form() {
        let line = TableLine {
            data_device: "/dev/vda3".into(),
            hash_device: "/dev/vda3".into(),
            hash_start_block: 261,
            params: VerityParams::new(260, vec![0xab, 0xcd]),
            root: vec![0x11; 32],
            corruption: CorruptionMode::PanicOnCorruption,
            ignore_zero_blocks: false,
            check_at_most_once: false,
        };
        assert_eq!(
            line.to_string(),
            format!("0 2080 verity 1 /dev/vda3 /dev/vda3 4096 4096 260 261 sha256 {} abcd 1 panic_on_corruption", "11".repeat(32))
        );
        let all = TableLine { ignore_zero_blocks: true, check_at_most_once: true, corruption: CorruptionMode::Eio, ..line.clone() };
        assert!(all.to_string().ends_with(" abcd 2 ignore_zero_blocks check_at_most_once"));
        let plain = TableLine { corruption: CorruptionMode::Eio, ..line };
        assert!(plain.to_string().ends_with(" abcd"));
    }
}
