//! `keel dm status`: a device-mapper device as the kernel holds it.

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum DmCommand {
    /// a device-mapper device's table, and a verity device's status
    Status(StatusArgs),
}

impl DmCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            DmCommand::Status(args) => dm_status(&args),
        }
    }
}

#[derive(Args)]
pub struct StatusArgs {
    /// the device's name, as under /dev/mapper
    name: String,
}

fn dm_status(args: &StatusArgs) -> anyhow::Result<()> {
    let name = &args.name;
    let (target, table) = keel_dm::table(name)?;
    println!("{name}: {target} {table}");
    if target == "verity" {
        println!("{name}: status {:?}", keel_dm::verity_status(name)?);
    }
    Ok(())
}
