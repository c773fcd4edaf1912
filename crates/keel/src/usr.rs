//! `keel usr show|set|prioritize|mark-successful`: the A/B /usr slots' gptprio bits
//! (priority, tries, successful), which the bootloader reads to pick the slot it boots.
//! The changes are cgpt's (`cgpt add -P/-T/-S`, `cgpt prioritize`), on the USR-A and
//! USR-B partitions of an image file or a block device.

use crate::disk::{Disk, DiskArgs};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use keel_disk::{GptprioChange, SectorSize, Slot, SlotState, TableWrite, GPTPRIO_MAX};
use std::fs::File;

#[derive(Subcommand)]
pub enum UsrCommand {
    /// the /usr slots' gptprio bits: priority, tries, successful
    Show(ShowArgs),
    /// changes a slot's gptprio bits, as cgpt add -P/-T/-S
    Set(SetArgs),
    /// puts the slot above the other, as cgpt prioritize
    Prioritize(PrioritizeArgs),
    /// the booted slot is good: successful 1, tries 0, on top
    MarkSuccessful(SlotArgs),
}

impl UsrCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            UsrCommand::Show(args) => show(&args),
            UsrCommand::Set(args) => set(&args),
            UsrCommand::Prioritize(args) => prioritize(&args),
            UsrCommand::MarkSuccessful(args) => mark_successful(&args),
        }
    }
}

#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// print the slots as one JSON object, with their partition GUIDs
    #[arg(long)]
    json: bool,
}

/// DISK and SLOT, the two positional words every changing command takes.
#[derive(Args)]
pub struct SlotArgs {
    #[command(flatten)]
    disk: DiskArgs,
    /// A, B, USR-A or USR-B, in any case
    slot: Slot,
}

#[derive(Args)]
pub struct SetArgs {
    #[command(flatten)]
    target: SlotArgs,
    /// the slot's priority: the bootloader tries the highest first; 0 never boots
    #[arg(long, value_name = "0-15", allow_negative_numbers = true, value_parser = clap::value_parser!(u8).range(0..=i64::from(GPTPRIO_MAX)))]
    priority: Option<u8>,
    /// how many more boots the bootloader gives a slot that is not yet successful
    #[arg(long, value_name = "0-15", allow_negative_numbers = true, value_parser = clap::value_parser!(u8).range(0..=i64::from(GPTPRIO_MAX)))]
    tries: Option<u8>,
    /// 1 when the slot has booted and lasted
    #[arg(long, value_name = "0|1", allow_negative_numbers = true, value_parser = clap::value_parser!(u8).range(0..=1))]
    successful: Option<u8>,
}

#[derive(Args)]
pub struct PrioritizeArgs {
    #[command(flatten)]
    target: SlotArgs,
    /// the slot's new priority, the other slot's one lower [default: 2 when the other slot has a priority, else 1]
    #[arg(long, value_name = "1-15", allow_negative_numbers = true, value_parser = clap::value_parser!(u8).range(1..=i64::from(GPTPRIO_MAX)))]
    max: Option<u8>,
}

fn slot_line(state: &SlotState) -> String {
    format!(
        "{}  partition {}  priority {}  tries {}  successful {}",
        state.slot,
        state.number,
        state.gptprio.priority(),
        state.gptprio.tries(),
        u8::from(state.gptprio.successful())
    )
}

fn slot_json(state: &SlotState) -> String {
    format!(
        "{{\"slot\":\"{}\",\"partition\":{},\"partuuid\":\"{}\",\"priority\":{},\"tries\":{},\"successful\":{}}}",
        state.slot,
        state.number,
        state.guid,
        state.gptprio.priority(),
        state.gptprio.tries(),
        state.gptprio.successful()
    )
}

fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let path = &args.disk.disk;
    let mut disk = Disk::open(&args.disk, false)?;
    let slots = keel_disk::read_usr_slots(&mut disk.file, disk.sector_size)
        .map_err(|error| disk.explain(error))
        .with_context(|| format!("cannot read the /usr slots of {path}"))?;
    if args.json {
        println!("{{\"slots\":[{},{}]}}", slot_json(&slots.a), slot_json(&slots.b));
    } else {
        println!("{}", slot_line(&slots.a));
        println!("{}", slot_line(&slots.b));
    }
    Ok(())
}

/// Runs one change on the slot's disk, then prints both slots as they now are and syncs the disk.
fn change(args: &SlotArgs, run: impl FnOnce(&mut File, SectorSize) -> anyhow::Result<TableWrite>) -> anyhow::Result<()> {
    let path = &args.disk.disk;
    let mut disk = Disk::open(&args.disk, true)?;
    let outcome = run(&mut disk.file, disk.sector_size)
        .map_err(|error| disk.explain(error))
        .with_context(|| format!("cannot change the /usr slots of {path}"))?;
    disk.file.sync_all().with_context(|| format!("cannot sync {path}"))?;
    if outcome == TableWrite::AlreadyRight {
        println!("{path}: already so; nothing written");
    }
    let slots = keel_disk::read_usr_slots(&mut disk.file, disk.sector_size)?;
    println!("{}", slot_line(&slots.a));
    println!("{}", slot_line(&slots.b));
    Ok(())
}

fn set(args: &SetArgs) -> anyhow::Result<()> {
    let wanted = GptprioChange { priority: args.priority, tries: args.tries, successful: args.successful.map(|value| value == 1) };
    if wanted.is_empty() {
        bail!("give at least one of --priority 0-15, --tries 0-15, --successful 0|1");
    }
    let slot = args.target.slot;
    change(&args.target, |file, sector_size| keel_disk::set_slot_gptprio(file, sector_size, slot, &wanted))
}

fn prioritize(args: &PrioritizeArgs) -> anyhow::Result<()> {
    let (slot, max) = (args.target.slot, args.max);
    change(&args.target, |file, sector_size| keel_disk::prioritize_slot(file, sector_size, slot, max))
}

fn mark_successful(args: &SlotArgs) -> anyhow::Result<()> {
    change(args, |file, sector_size| keel_disk::mark_slot_successful(file, sector_size, args.slot))
}
