//! The harnesses behind keel's fuzz targets (`fuzz_targets/`, one binary each), with the
//! invariants they hold keel to and the seeds their corpora start from.
//!
//! A harness panics when keel breaks an invariant, and libFuzzer keeps the input that did
//! it. Errors are fine: every parser here reads untrusted bytes and must refuse bad ones;
//! what it must not do is panic, or accept something that breaks what it promises.

pub mod cmdline;
pub mod fat;
pub mod gpt;
pub mod manifest;
pub mod probe;
pub mod verity_superblock;

/// One file of a target's checked-in corpus.
pub struct Seed {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// Names a directory: the fuzz target writes its seeds there and exits instead of fuzzing.
/// The seeds come from keel's own writers, so only a binary that links keel can make
/// them, and the fuzz target already is one (`cargo xtask fuzz --write-seeds`).
pub const WRITE_SEEDS_ENV: &str = "KEEL_FUZZ_WRITE_SEEDS";

/// The fuzz targets' initialiser: writes `seeds()` and exits when `WRITE_SEEDS_ENV` is set.
pub fn write_seeds_if_asked(seeds: fn() -> Vec<Seed>) {
    let Some(dir) = std::env::var_os(WRITE_SEEDS_ENV) else { return };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    for seed in seeds() {
        let path = dir.join(seed.name);
        std::fs::write(&path, &seed.bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
    std::process::exit(0);
}
