//! Kernel modules without kmod or udev. The initrd builder reads a kernel's module
//! directory ([`ModuleIndex`]), picks drivers ([`host_storage_modaliases`] for a
//! host-only initrd) and writes a [`DriverTable`]; keel-init loads its fixed module list
//! and, as devices show up, the drivers their modaliases match ([`Drivers`]).

mod alias;
mod dep;
mod load;
mod sysfs;
mod table;

pub use alias::supported as alias_pattern_supported;
pub use dep::{module_name, ModuleIndex};
pub use load::{load_listed, DriverLoad, Drivers, FileCounts, Loaded};
pub use sysfs::{device_modalias, host_storage_modaliases};
pub use table::{DriverTable, LoadEntry};
