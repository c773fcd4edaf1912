#![no_main]
libfuzzer_sys::fuzz_target!(init: keel_fuzz::write_seeds_if_asked(keel_fuzz::fat::seeds), |input: &[u8]| keel_fuzz::fat::run(input));
