//! `keel usr show|set|prioritize|mark-successful`: the A/B /usr slots' gptprio bits
//! (priority, tries, successful), which the bootloader reads to pick the slot it boots.
//! The changes are cgpt's (`cgpt add -P/-T/-S`, `cgpt prioritize`), on the USR-A and
//! USR-B partitions of an image file or a block device.

use crate::args::Args;
use crate::disk::Disk;
use crate::USAGE;
use anyhow::{bail, Context};
use keel_disk::{GptprioChange, SectorSize, Slot, SlotState, TableWrite, GPTPRIO_MAX};
use std::fs::File;

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

pub fn show(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["sector-size"], &["json"])?;
    let [path] = args.positional.as_slice() else { bail!("give the disk (an image file or a block device)\n{USAGE}") };
    let mut disk = Disk::open(path, &args, false)?;
    let slots = keel_disk::read_usr_slots(&mut disk.file, disk.sector_size)
        .map_err(|error| disk.explain(error))
        .with_context(|| format!("cannot read the /usr slots of {path}"))?;
    if args.flag("json") {
        println!("{{\"slots\":[{},{}]}}", slot_json(&slots.a), slot_json(&slots.b));
    } else {
        println!("{}", slot_line(&slots.a));
        println!("{}", slot_line(&slots.b));
    }
    Ok(())
}

/// DISK and SLOT, the two positional words every changing command takes.
fn disk_and_slot(args: &Args) -> anyhow::Result<(&str, Slot)> {
    let [disk, slot] = args.positional.as_slice() else { bail!("give the disk (an image file or a block device) and the slot (A or B)\n{USAGE}") };
    Ok((disk, slot.parse()?))
}

/// `--name N` as a number in `range`, the error naming the option and the range.
fn ranged(args: &Args, name: &str, range: std::ops::RangeInclusive<u8>) -> anyhow::Result<Option<u8>> {
    let Some(text) = args.get(name) else { return Ok(None) };
    match text.parse::<u8>() {
        Ok(value) if range.contains(&value) => Ok(Some(value)),
        _ => bail!("--{name} {text:?} is not a number from {} to {}", range.start(), range.end()),
    }
}

/// Runs one change on DISK, then prints both slots as they now are and syncs the disk.
fn change(path: &str, args: &Args, run: impl FnOnce(&mut File, SectorSize) -> anyhow::Result<TableWrite>) -> anyhow::Result<()> {
    let mut disk = Disk::open(path, args, true)?;
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

pub fn set(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["priority", "tries", "successful", "sector-size"], &[])?;
    let (disk, slot) = disk_and_slot(&args)?;
    let wanted = GptprioChange {
        priority: ranged(&args, "priority", 0..=GPTPRIO_MAX)?,
        tries: ranged(&args, "tries", 0..=GPTPRIO_MAX)?,
        successful: ranged(&args, "successful", 0..=1)?.map(|value| value == 1),
    };
    if wanted.is_empty() {
        bail!("give at least one of --priority 0-15, --tries 0-15, --successful 0|1\n{USAGE}");
    }
    change(disk, &args, |file, sector_size| keel_disk::set_slot_gptprio(file, sector_size, slot, &wanted))
}

pub fn prioritize(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["max", "sector-size"], &[])?;
    let (disk, slot) = disk_and_slot(&args)?;
    let max = ranged(&args, "max", 1..=GPTPRIO_MAX)?;
    change(disk, &args, |file, sector_size| keel_disk::prioritize_slot(file, sector_size, slot, max))
}

pub fn mark_successful(words: &[String]) -> anyhow::Result<()> {
    let args = Args::parse(words, &["sector-size"], &[])?;
    let (disk, slot) = disk_and_slot(&args)?;
    change(disk, &args, |file, sector_size| keel_disk::mark_slot_successful(file, sector_size, slot))
}
