//! The kernel command line, split the way the kernel splits it, and the boot parameters
//! keel understands (Flatcar's and systemd's names). Every parameter keel reads is read
//! here, so `docs/ARCHITECTURE.md` can point at one file.

mod device;
mod params;
mod split;

pub use device::DeviceSpec;
pub use params::{BootParams, EmergencyAction, FirstBootRequest, UsrCorruption};
pub use split::Cmdline;
