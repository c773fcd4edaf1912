#![no_main]
libfuzzer_sys::fuzz_target!(init: keel_fuzz::write_seeds_if_asked(keel_fuzz::verity_superblock::seeds), |input: &[u8]| keel_fuzz::verity_superblock::run(input));
