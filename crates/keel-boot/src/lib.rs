//! The boot plan of keel-init, PID 1 of a keel initrd: mount the pseudo-filesystems, read
//! the command line and the baked-in image manifest, load modules, verify /usr with
//! dm-verity, on first boot apply the Ignition config (disks, then files once ROOT is up),
//! give the disk its own GUIDs and grow ROOT, mount ROOT (formatting it
//! when blank, growing its filesystem on first boot), overlay /etc, clear the first-boot
//! flag, and switch root.
//! Any failure stops the boot with a report naming the stage; /usr is never used unverified.

mod devices;
mod drivers;
mod emergency;
mod environment;
mod first_boot;
mod ignition;
mod kernel_args;
mod log;
mod mkfs;
mod mounts;
mod on_demand;
mod plan;
mod root;
mod stage;
mod storage;
mod switch_root;
mod usr;

pub use devices::{look_once, FoundDevice};
pub use plan::run_pid1;
