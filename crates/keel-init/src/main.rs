//! PID 1 of a keel initrd. All of the work is keel-boot's; this only refuses to run
//! anywhere else, because the boot plan mounts over /proc, /dev and /run.

fn main() {
    if std::process::id() != 1 {
        eprintln!("keel-init is the init of a keel initrd and runs only as PID 1; it was started as PID {}.", std::process::id());
        std::process::exit(2);
    }
    keel_boot::run_pid1()
}
