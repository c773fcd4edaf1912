# Thin wrappers over `cargo xtask`, which does the work (and installs what it needs).

demo:
    cargo xtask demo

test:
    cargo xtask test

vm-test:
    cargo xtask vm-test

bench:
    cargo xtask bench verity
    cargo xtask bench look
    cargo xtask bench boot

fuzz:
    cargo xtask fuzz
