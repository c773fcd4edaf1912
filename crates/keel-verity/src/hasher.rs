use crate::{HashAlgorithm, HashType, VerityParams, MAX_DIGEST_SIZE};
use sha2::Digest as _;

/// A hash state with the salt already absorbed where format 1 puts it.
#[derive(Clone)]
enum State {
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Hashes blocks the way dm-verity does for one set of parameters.
#[derive(Clone)]
pub(crate) struct Hasher {
    pub(crate) params: VerityParams,
    salted: State,
    /// Format 0 appends the salt after the block instead.
    salt_suffix: Option<Vec<u8>>,
    digest_size: usize,
}

fn finish<D: sha2::Digest>(mut state: D, block: &[u8], suffix: Option<&[u8]>, out: &mut [u8]) {
    state.update(block);
    if let Some(salt) = suffix {
        state.update(salt);
    }
    out.copy_from_slice(&state.finalize());
}

impl Hasher {
    pub(crate) fn new(params: &VerityParams) -> Hasher {
        let prefix: &[u8] = if params.hash_type == HashType::Normal { &params.salt } else { &[] };
        let salted = match params.algorithm {
            HashAlgorithm::Sha1 => State::Sha1(sha1::Sha1::new_with_prefix(prefix)),
            HashAlgorithm::Sha256 => State::Sha256(sha2::Sha256::new_with_prefix(prefix)),
            HashAlgorithm::Sha512 => State::Sha512(sha2::Sha512::new_with_prefix(prefix)),
        };
        let salt_suffix = (params.hash_type == HashType::ChromeOs).then(|| params.salt.clone());
        Hasher { params: params.clone(), salted, salt_suffix, digest_size: params.digest_size() }
    }

    /// Writes the digest of `block` into `out`, which is exactly one digest long.
    pub(crate) fn hash_into(&self, block: &[u8], out: &mut [u8]) {
        let suffix = self.salt_suffix.as_deref();
        match &self.salted {
            State::Sha1(state) => finish(state.clone(), block, suffix, out),
            State::Sha256(state) => finish(state.clone(), block, suffix, out),
            State::Sha512(state) => finish(state.clone(), block, suffix, out),
        }
    }

    /// The digest of `block`, for comparisons and the root hash.
    pub(crate) fn hash(&self, block: &[u8]) -> Vec<u8> {
        let mut digest = [0u8; MAX_DIGEST_SIZE];
        self.hash_into(block, &mut digest[..self.digest_size]);
        digest[..self.digest_size].to_vec()
    }
}
