use crate::devices::{BootDisk, DeviceWatcher, FoundDevice, Scope, Wanted};
use crate::emergency::{self, Failure};
use crate::first_boot::{self, RootDisk};
use crate::ignition;
use crate::kernel_args;
use crate::log::{uptime, Log};
use crate::mounts::mount_pseudo_filesystems;
use crate::root::{ensure_skeleton, mount_etc_overlay, mount_root};
use crate::stage::{self, Stage};
use crate::storage;
use crate::switch_root::{check_init, switch_root, DEFAULT_INIT};
use crate::usr::{check_hash_area, mount_verified_usr, open_verified_usr, VerifiedUsr};
use anyhow::{bail, Context};
use keel_cmdline::{BootParams, Cmdline, DeviceSpec, EmergencyAction};
use keel_disk::slot_of;
use keel_kmod::{DriverTable, Drivers};
use keel_manifest::{ImageManifest, INITRD_DRIVERS_PATH, INITRD_MANIFEST_PATH, INITRD_MODULES_PATH};
use keel_timeline::Recorder;
use std::convert::Infallible;
use std::path::Path;

const SYSROOT: &str = "/sysroot";
/// Which /usr slot this boot verified (USR-A, USR-B, or `none` for a /usr outside the A/B
/// pair), for update tools in the booted system.
const USR_SLOT: &str = "/run/keel/usr-slot";

struct Boot {
    log: Log,
    timeline: Recorder,
    break_before: Option<String>,
}

impl Boot {
    /// Runs one stage: stops first if `rd.break` names it, then logs and records its
    /// outcome and duration. The closure returns a short detail for the log.
    fn stage<T>(&mut self, stage: &'static Stage, run: impl FnOnce(&mut Log) -> anyhow::Result<(T, String)>) -> Result<T, Failure> {
        if self.break_before.as_deref() == Some(stage.name) {
            return Err(Failure::Stopped { stage });
        }
        let started = uptime();
        let result = run(&mut self.log);
        let took = uptime().saturating_sub(started);
        let millis = took.as_secs_f64() * 1000.0;
        match result {
            Ok((value, detail)) => {
                self.log.info(&format!("{}: {detail} ({millis:.1} ms)", stage.name));
                self.timeline.record(stage.name, started, took, Ok(&detail));
                Ok(value)
            }
            Err(error) => {
                self.timeline.record(stage.name, started, took, Err(format!("{error:#}")));
                Err(Failure::Failed { stage, error })
            }
        }
    }
}

fn params_from(cmdline_text: &str) -> anyhow::Result<BootParams> {
    let params = BootParams::from_cmdline(&Cmdline::parse(cmdline_text))?;
    if let Some(name) = &params.break_before
        && !stage::BREAKABLE.iter().any(|s| s.name == name)
    {
        let names: Vec<&str> = stage::BREAKABLE.iter().map(|s| s.name).collect();
        bail!("rd.break={name} is not a stage keel can stop before; those are {}", names.join(", "));
    }
    Ok(params)
}

/// What the command line may not change about /usr: its filesystem is the manifest's.
fn check_against_manifest(params: &BootParams, manifest: &ImageManifest) -> anyhow::Result<()> {
    if let Some(fstype) = &params.usr_fstype
        && *fstype != manifest.usr.filesystem
    {
        bail!("mount.usrfstype={fstype} differs from the /usr filesystem this initrd was built for ({})", manifest.usr.filesystem);
    }
    Ok(())
}

fn read_config() -> anyhow::Result<(BootParams, ImageManifest)> {
    let cmdline_text = std::fs::read_to_string("/proc/cmdline").context("cannot read /proc/cmdline")?;
    let params = params_from(&cmdline_text)?;
    let manifest_text = std::fs::read_to_string(INITRD_MANIFEST_PATH).with_context(|| format!("cannot read {INITRD_MANIFEST_PATH}"))?;
    let manifest = ImageManifest::from_json(&manifest_text).with_context(|| format!("in {INITRD_MANIFEST_PATH}"))?;
    check_against_manifest(&params, &manifest)?;
    Ok((params, manifest))
}

/// The A/B slot the verified /usr is, from the boot disk's partition table.
fn usr_slot(boot_disk: Option<&BootDisk>, data: &FoundDevice) -> anyhow::Result<&'static str> {
    let Some(boot_disk) = boot_disk else { return Ok("none") };
    let Some(number) = boot_disk.number_of(data) else { return Ok("none") };
    Ok(boot_disk.table()?.partition(number).and_then(slot_of).map_or("none", |slot| slot.partition_name()))
}

/// Where ROOT may be found: names anyone can give a disk (`LABEL=`, `PARTLABEL=`) count
/// only on the boot disk; a spec that names one device counts anywhere.
fn root_scope<'a>(spec: &DeviceSpec, boot_disk: Option<&'a BootDisk>) -> Scope<'a> {
    match (spec, boot_disk) {
        (DeviceSpec::Label(_) | DeviceSpec::PartLabel(_), Some(boot_disk)) => Scope::BootDisk(boot_disk),
        _ => Scope::AnyDisk,
    }
}

/// keel-init's whole job. Never returns: it either executes the real init or carries out
/// the emergency action.
pub fn run_pid1() -> ! {
    let mut boot = Boot { log: Log::new(), timeline: Recorder::new(uptime()), break_before: None };
    let mut emergency = (EmergencyAction::Reboot, false);
    let failure = match boot_to_real_root(&mut boot, &mut emergency) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    emergency::handle(&mut boot.log, &failure, emergency.0, emergency.1)
}

fn boot_to_real_root(boot: &mut Boot, emergency: &mut (EmergencyAction, bool)) -> Result<Infallible, Failure> {
    boot.log.info("keel-init starting");
    boot.stage(&stage::MOUNTS, |log| {
        mount_pseudo_filesystems()?;
        log.open_kmsg();
        Ok(((), "/proc /sys /dev /run mounted".into()))
    })?;
    let (params, manifest) = boot.stage(&stage::CONFIG, |_| {
        let (params, manifest) = read_config()?;
        let detail = format!("/usr {} from {}, root {}", manifest.os, params.usr_data, params.root);
        Ok(((params, manifest), detail))
    })?;
    *emergency = (params.emergency, params.shell);
    boot.break_before = params.break_before.clone();

    // Listening starts before drivers load, so no device's arrival is missed.
    let watcher = boot.stage(&stage::MODULES, |log| {
        let read = |path: &str| std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"));
        let drivers = DriverTable::parse(&read(INITRD_DRIVERS_PATH)?).with_context(|| format!("in {INITRD_DRIVERS_PATH}"))?;
        let watcher = DeviceWatcher::open(Drivers::new(drivers))?;
        let list = read(INITRD_MODULES_PATH)?;
        // The listed modules and the drivers need nothing of each other: while a driver
        // probes its devices, the list loads beside it.
        let (loaded, present) = std::thread::scope(|scope| {
            let listed = std::thread::Builder::new().spawn_scoped(scope, || keel_kmod::load_listed(&list));
            let present = watcher.load_present_drivers();
            let loaded = match listed {
                Ok(thread) => thread.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the thread loading {INITRD_MODULES_PATH} panicked"))),
                Err(_) => keel_kmod::load_listed(&list),
            };
            (loaded, present)
        });
        let loaded = loaded?;
        let slowest = match loaded.slowest {
            Some((name, took)) => format!(", slowest {name} {:.1} ms", took.as_secs_f64() * 1000.0),
            None => String::new(),
        };
        let declined = if loaded.declined > 0 { format!(", {} declined (no hardware for them)", loaded.declined) } else { String::new() };
        for load in present.loads.iter().filter(|load| load.outcome.is_err()) {
            log.info(&format!("modules: {}", load.describe()));
        }
        let names: Vec<&str> = present.loads.iter().filter(|load| load.outcome.is_ok()).map(|load| load.driver.as_str()).collect();
        let drivers = if names.is_empty() { "none".to_string() } else { names.join(" ") };
        let scan = format!("{} devices read in {:.1} ms", present.devices, present.scanning.as_secs_f64() * 1000.0);
        Ok((watcher, format!("{} modules loaded{declined}{slowest}; drivers for the devices present: {drivers} ({scan})", loaded.count)))
    })?;

    let (usr, boot_disk) = boot.stage(&stage::USR, |log| {
        let verifies = |disk: &std::fs::File, start: u64| {
            check_hash_area(disk, Path::new("the disk"), start, manifest.usr.hash_offset, &manifest.usr).map(|_| ())
        };
        let wanted = Wanted {
            spec: &params.usr_data,
            scope: Scope::AnyDisk,
            repair_if_usr_verifies: Some(&verifies),
            image_bytes: Some(manifest.image_bytes),
        };
        let data = watcher.wait_for(&wanted, params.device_timeout)?;
        let hash = match &params.usr_hash_device {
            Some(spec) => watcher.wait_for(&Wanted::anywhere(spec), params.device_timeout)?,
            None => data.clone(),
        };
        for change in watcher.take_changes() {
            log.info(&format!("usr: {change}"));
        }
        let VerifiedUsr { device, tree_bytes, tree_checked_in } = open_verified_usr(&params, &manifest.usr, &data, &hash)?;
        let boot_disk = BootDisk::of_verified_usr(&data)?;
        let slot = usr_slot(boot_disk.as_ref(), &data)?;
        std::fs::create_dir_all("/run/keel").context("cannot create /run/keel")?;
        std::fs::write(USR_SLOT, format!("{slot}\n")).with_context(|| format!("cannot write {USR_SLOT}"))?;
        let boot_disk_name =
            boot_disk.as_ref().map_or("none (keel writes to no disk)".to_string(), |b| format!("{} ({})", b.disk.node.display(), b.sector_size));
        let detail = format!(
            "{} verified: dm-verity device {} from {} (slot {slot}), status V; hash tree of {} KiB checked in {:.1} ms; boot disk {boot_disk_name}",
            params.usr_data,
            device.node.display(),
            data.node.display(),
            tree_bytes >> 10,
            tree_checked_in.as_secs_f64() * 1000.0
        );
        Ok(((device, boot_disk), detail))
    })?;

    let (root, root_disk, first_boot) = boot.stage(&stage::FIRST_BOOT, |log| {
        let wanted =
            Wanted { spec: &params.root, scope: root_scope(&params.root, boot_disk.as_ref()), repair_if_usr_verifies: None, image_bytes: None };
        let root = watcher.wait_for(&wanted, params.device_timeout)?;
        for change in watcher.take_changes() {
            log.info(&format!("first-boot: {change}"));
        }
        let root_disk = RootDisk::of(boot_disk.as_ref(), &root);
        let first_boot = boot_disk.as_ref().and_then(|boot_disk| first_boot::detect(&params, boot_disk, log));
        let detail = match (&first_boot, &boot_disk) {
            (Some(first), Some(_)) => format!("first boot ({})", first.reason),
            (_, None) => "not a first boot: /usr is not a partition of a GPT disk, so keel writes to no disk".to_string(),
            (None, Some(_)) => "not a first boot".to_string(),
        };
        Ok(((root, root_disk, first_boot), detail))
    })?;

    // First boot reads and checks every config before it writes anything, to any disk.
    let fetched = match (&first_boot, &boot_disk) {
        (Some(_), Some(boot_disk)) => {
            let fetched = boot.stage(&stage::IGNITION_FETCH, |log| ignition::fetch(&params, Some(boot_disk), log))?;
            if let Some((should_exist, should_not_exist)) = kernel_args::requested(&fetched.resolved.config) {
                let reboot = boot.stage(&stage::IGNITION_KARGS, |_| kernel_args::apply(&should_exist, &should_not_exist, boot_disk))?;
                if reboot {
                    // The flag stays: the next boot is a first boot again, with the arguments.
                    emergency::reboot_now();
                }
            }
            boot.stage(&stage::IGNITION_DISKS, |log| {
                let detail = storage::ignition_disks(&fetched.resolved.config, &params, boot_disk, &root, root_disk.as_ref(), &watcher, log)?;
                Ok(((), detail))
            })?;
            Some(fetched)
        }
        _ => None,
    };

    let sysroot = Path::new(SYSROOT);
    let grow_failed = boot.stage(&stage::ROOT, |_| {
        let outcome = mount_root(&params, &root, root_disk.as_ref(), first_boot.is_some(), sysroot)?;
        ensure_skeleton(sysroot)?;
        mount_verified_usr(&usr, &sysroot.join("usr"), &manifest.usr.filesystem, params.usr_flags.as_deref())?;
        let kind = outcome.filesystem.mount_type();
        let mut detail = format!("{} ({kind}) mounted at {SYSROOT}; /usr mounted read-only", root.node.display());
        if let Some(reason) = outcome.formatted {
            detail.push_str(&format!("; formatted as {kind} because {reason}"));
        }
        if outcome.journal_replayed_first {
            detail.push_str("; its journal was replayed by a mount of its own first (it was not unmounted cleanly)");
        }
        let grow_failed = match outcome.grown {
            Some(Ok((before, after))) => {
                detail.push_str(&format!("; filesystem grown from {} to {} MiB", before >> 20, after >> 20));
                false
            }
            Some(Err(error)) => {
                detail.push_str(&format!(
                    "; its filesystem could NOT be grown ({error:#}): it keeps its old size, first boot is not over, and the \
                     next boot tries again (flatcar.first_boot=0 skips it)"
                ));
                true
            }
            None => false,
        };
        Ok((grow_failed, detail))
    })?;

    boot.stage(&stage::ETC, |_| {
        mount_etc_overlay(sysroot, &manifest.os)?;
        Ok(((), format!("overlay on /usr/share/{}/etc", manifest.os)))
    })?;

    if let Some(fetched) = &fetched {
        boot.stage(&stage::IGNITION_FILES, |_| Ok(((), ignition::apply_files(fetched, sysroot)?)))?;
    }

    // First boot is over only when every step of it succeeded.
    if let Some(first_boot) = first_boot.as_ref().filter(|_| !grow_failed) {
        boot.stage(&stage::FIRST_BOOT_DONE, |_| {
            let detail = first_boot::finish(first_boot)
                .unwrap_or_else(|error| format!("the first-boot flag could not be cleared, so the next boot runs first boot again: {error:#}"));
            Ok(((), detail))
        })?;
    }

    let init = params.init.clone().unwrap_or_else(|| DEFAULT_INIT.to_string());
    boot.stage(&stage::SWITCH_ROOT, |_| {
        check_init(sysroot, &init)?;
        std::fs::create_dir_all("/run/keel").context("cannot create /run/keel")?;
        Ok(((), format!("executing {init} in the real root")))
    })?;
    // Written last so the real root sees every stage, including the switch itself.
    let _ = std::fs::write(keel_timeline::PATH, boot.timeline.to_json(uptime()));
    let init_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let error = match switch_root(sysroot, &init, &init_args) {
        Ok(never) => match never {},
        Err(error) => error,
    };
    Err(Failure::Failed { stage: &stage::SWITCH_ROOT, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rd_break_takes_the_stages_it_can_honour() {
        for stage in stage::BREAKABLE {
            assert!(params_from(&format!("rd.break={}", stage.name)).is_ok(), "{}", stage.name);
        }
        assert_eq!(params_from("rd.break").unwrap().break_before.as_deref(), Some(stage::SWITCH_ROOT.name));
        for too_early_or_unknown in ["pre-mount", "mounts", "config"] {
            let error = params_from(&format!("rd.break={too_early_or_unknown}")).unwrap_err().to_string();
            assert!(error.contains("not a stage keel can stop before") && error.contains("usr"), "{error}");
        }
    }

    #[test]
    fn the_command_line_cannot_change_the_usr_filesystem() {
        let manifest = ImageManifest::from_json(
            r#"{"os":"keel","image_bytes":1048576,"usr":{"filesystem":"ext4","hash_offset":4096,"root_hash":"00000000000000000000000000000000000000000000000000000000000000aa",
            "hash_algorithm":"sha256","hash_type":1,"data_block_size":4096,"hash_block_size":4096,"data_blocks":1,"salt":""}}"#,
        )
        .unwrap();
        assert!(check_against_manifest(&params_from("mount.usrfstype=ext4").unwrap(), &manifest).is_ok());
        for other in ["overlay", "tmpfs", "btrfs"] {
            let error = check_against_manifest(&params_from(&format!("mount.usrfstype={other}")).unwrap(), &manifest).unwrap_err();
            assert!(error.to_string().contains("differs from the /usr filesystem"), "{error}");
        }
    }
}
