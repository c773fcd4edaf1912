//! Kernel modules without kmod or udev. The initrd builder reads a kernel's module
//! directory ([`ModuleIndex`]), picks drivers ([`host_storage_modaliases`] for a
//! host-only initrd) and writes a [`DriverTable`]; keel-init loads its fixed module list
//! and, as devices show up, the drivers their modaliases match ([`Drivers`]).

mod alias;
mod dep;
mod host;
mod load;
mod table;

pub use alias::matches as alias_matches;
pub use dep::{module_name, ModuleIndex};
pub use host::host_storage_modaliases;
pub use load::{load_listed, DriverLoad, Drivers, Loaded};
pub use table::DriverTable;
