use crate::{Cmdline, DeviceSpec};
use anyhow::{bail, Context};
use keel_disk::{FsKind, Guid, IMAGE_DISK_GUID};
use std::time::Duration;

/// Where /usr lives when the command line does not say: Flatcar's first slot.
pub const DEFAULT_USR: &str = "PARTLABEL=USR-A";
/// Flatcar's grub passes `root=LABEL=ROOT`; keel assumes it when nothing is given.
pub const DEFAULT_ROOT: &str = "LABEL=ROOT";
const DEFAULT_DEVICE_TIMEOUT: Duration = Duration::from_secs(300);
/// Flatcar's `mount.usr=` names the verity device itself, not the partition under it.
const VERITY_USR_NODE: &str = "/dev/mapper/usr";

/// What PID 1 does after it has reported a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmergencyAction {
    Reboot,
    Poweroff,
    Halt,
}

/// What the kernel does when a /usr block does not match its hash. There is deliberately
/// no way to ask it to ignore corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsrCorruption {
    Panic,
    Restart,
}

/// What the command line says about first boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstBootRequest {
    /// Nothing: the first-boot flag file on the ESP decides.
    Unsaid,
    /// `flatcar.first_boot=0` (or no, off, empty): not a first boot, whatever the flag says.
    No,
    /// `flatcar.first_boot=1`, `ignition.firstboot`: a first boot, on every boot with this line.
    Yes,
    /// `flatcar.first_boot=detected`: the bootloader saw the flag file; it is removed once
    /// first boot has succeeded.
    Detected,
}

/// The boot parameters keel-init acts on, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootParams {
    /// The partition holding /usr data and, unless `usr_hash_device` says otherwise, its tree.
    pub usr_data: DeviceSpec,
    pub usr_hash_device: Option<DeviceSpec>,
    /// A root hash on the command line; it must equal the one baked into the initrd.
    pub usr_root_hash: Option<String>,
    pub usr_fstype: Option<String>,
    pub usr_flags: Option<String>,
    pub usr_corruption: UsrCorruption,
    pub root: DeviceSpec,
    pub root_fstype: Option<String>,
    pub root_flags: Option<String>,
    /// How long to wait for a device; `None` waits for ever (`rd.timeout=0`).
    pub device_timeout: Option<Duration>,
    pub emergency: EmergencyAction,
    pub shell: bool,
    /// `rd.break=<stage>`: stop before that stage. A bare `rd.break` stops before switch-root.
    pub break_before: Option<String>,
    pub init: Option<String>,
    pub first_boot: FirstBootRequest,
    /// The disk GUID an image ships with; a disk that still has it gets its own on first boot.
    pub image_disk_guid: Guid,
    /// `keel.root.fs=`: what a blank ROOT is formatted with (ext4 when unsaid).
    pub root_filesystem: FsKind,
    /// Where first boot's Ignition user config comes from, when the command line says: the
    /// parameter that said it and the URL.
    pub ignition_config_url: Option<(&'static str, String)>,
    /// The platform Ignition runs on, when the command line names it (already in Ignition's
    /// names: Flatcar's `ec2` is `aws`).
    pub platform: Option<String>,
}

impl BootParams {
    pub fn from_cmdline(cmdline: &Cmdline) -> anyhow::Result<BootParams> {
        let device = |key: &str| -> anyhow::Result<Option<DeviceSpec>> {
            cmdline.value(key).map(|v| DeviceSpec::parse(v).with_context(|| format!("bad {key}="))).transpose()
        };
        let mount_usr = match cmdline.last_of(&["mount.usr", "usr"]) {
            Some((key, Some(value))) if value != VERITY_USR_NODE => Some(DeviceSpec::parse(value).with_context(|| format!("bad {key}="))?),
            _ => None,
        };
        let usr_data = match (device("verity.usr")?, device("systemd.verity_usr_data")?, mount_usr) {
            (Some(spec), _, _) | (None, Some(spec), _) | (None, None, Some(spec)) => spec,
            (None, None, None) => DeviceSpec::parse(DEFAULT_USR)?,
        };
        let usr_root_hash = match cmdline.last_of(&["verity.usrhash", "usrhash"]) {
            Some((_, Some(hash))) => Some(hash.to_ascii_lowercase()),
            Some((key, None)) => bail!("{key} needs a value"),
            None => None,
        };
        let root = match cmdline.value("root") {
            Some(value) => DeviceSpec::parse(value).context("bad root=")?,
            None => DeviceSpec::parse(DEFAULT_ROOT)?,
        };
        let break_before = match cmdline.last_of(&["rd.break"]) {
            Some((_, Some(stage))) => Some(stage.to_string()),
            Some((_, None)) => Some("switch-root".to_string()),
            None => None,
        };
        Ok(BootParams {
            usr_data,
            usr_hash_device: device("systemd.verity_usr_hash")?,
            usr_root_hash,
            usr_fstype: cmdline.value("mount.usrfstype").map(str::to_string),
            usr_flags: cmdline.value("mount.usrflags").map(str::to_string),
            usr_corruption: parse_usr_options(cmdline.value("systemd.verity_usr_options"))?,
            root,
            root_fstype: cmdline.value("rootfstype").map(str::to_string),
            root_flags: cmdline.value("rootflags").map(str::to_string),
            device_timeout: match cmdline.value("rd.timeout") {
                Some(text) => parse_timespan(text).context("bad rd.timeout=")?,
                None => Some(DEFAULT_DEVICE_TIMEOUT),
            },
            emergency: match cmdline.value("rd.emergency") {
                None | Some("reboot") => EmergencyAction::Reboot,
                Some("poweroff") => EmergencyAction::Poweroff,
                Some("halt") => EmergencyAction::Halt,
                Some(other) => bail!("rd.emergency={other} is not reboot, poweroff or halt"),
            },
            shell: matches!(cmdline.last_of(&["rd.shell"]), Some((_, None | Some("1" | "yes" | "true" | "on")))),
            break_before,
            init: cmdline.value("init").map(str::to_string),
            first_boot: first_boot_request(cmdline),
            image_disk_guid: match cmdline.value("flatcar.randomize_disk_guid") {
                // Flatcar's disk-uuid treats an empty value as its default.
                Some("") | None => Guid::parse(IMAGE_DISK_GUID)?,
                Some(guid) => Guid::parse(guid).context("bad flatcar.randomize_disk_guid=")?,
            },
            root_filesystem: match cmdline.value("keel.root.fs") {
                Some("ext4") | None => FsKind::Ext4,
                Some("xfs") => FsKind::Xfs,
                Some("btrfs") => FsKind::Btrfs,
                Some(other) => bail!("keel.root.fs={other} is not a filesystem keel formats ROOT with: use ext4, xfs or btrfs"),
            },
            ignition_config_url: CONFIG_URL_KEYS
                .iter()
                .find_map(|&key| cmdline.value(key).filter(|url| !url.is_empty()).map(|url| (key, url.to_string()))),
            platform: platform(cmdline),
        })
    }
}

/// The names of the user config's URL, in the order they are believed: Ignition's own, then
/// Flatcar's and CoreOS's older ones.
const CONFIG_URL_KEYS: [&str; 3] = ["ignition.config.url", "flatcar.config.url", "coreos.config.url"];

/// `ignition.platform.id=`, else Flatcar's `flatcar.oem.id=` or CoreOS's `coreos.oem.id=` under
/// the name Ignition gives that platform. Whether it is a usable name is first boot's to say
/// (keel-boot's ignition-fetch): a later boot does not read it, and must not fail on it.
fn platform(cmdline: &Cmdline) -> Option<String> {
    let (key, id) = ["ignition.platform.id", "flatcar.oem.id", "coreos.oem.id"]
        .iter()
        .find_map(|&key| cmdline.value(key).filter(|id| !id.is_empty()).map(|id| (key, id)))?;
    let id = match (key, id) {
        ("ignition.platform.id", id) => id,
        (_, "ec2") => "aws",
        (_, "gce") => "gcp",
        (_, "pxe") => "metal",
        (_, id) => id,
    };
    Some(id.to_string())
}

/// Flatcar's and CoreOS's `*.first_boot=` are true unless empty, 0, no or off, and
/// `detected` when the bootloader found the flag file; Ignition's `ignition.firstboot`
/// counts when present. Any parameter saying detected or yes wins over one saying no.
fn first_boot_request(cmdline: &Cmdline) -> FirstBootRequest {
    let says_no = |value: Option<&str>| matches!(value.unwrap_or(""), "" | "0" | "no" | "off");
    let mut request = FirstBootRequest::Unsaid;
    let mut consider = |said: FirstBootRequest| {
        let rank = |r: FirstBootRequest| match r {
            FirstBootRequest::Unsaid => 0,
            FirstBootRequest::No => 1,
            FirstBootRequest::Yes => 2,
            FirstBootRequest::Detected => 3,
        };
        if rank(said) > rank(request) {
            request = said;
        }
    };
    for key in ["flatcar.first_boot", "coreos.first_boot"] {
        match cmdline.last_of(&[key]) {
            None => {}
            Some((_, Some("detected"))) => consider(FirstBootRequest::Detected),
            Some((_, value)) if says_no(value) => consider(FirstBootRequest::No),
            Some(_) => consider(FirstBootRequest::Yes),
        }
    }
    match cmdline.last_of(&["ignition.firstboot"]) {
        None => {}
        Some((_, value @ Some(_))) if says_no(value) => consider(FirstBootRequest::No),
        Some(_) => consider(FirstBootRequest::Yes),
    }
    request
}

fn parse_usr_options(options: Option<&str>) -> anyhow::Result<UsrCorruption> {
    let mut mode = UsrCorruption::Panic;
    for option in options.unwrap_or_default().split(',').filter(|o| !o.is_empty()) {
        mode = match option {
            "panic-on-corruption" => UsrCorruption::Panic,
            "restart-on-corruption" => UsrCorruption::Restart,
            other => bail!("systemd.verity_usr_options={other} is not supported (keel accepts panic-on-corruption or restart-on-corruption)"),
        };
    }
    Ok(mode)
}

/// systemd's time spans as used for `rd.timeout=`: a number with an optional unit.
/// `0` means no limit, as for systemd's job timeouts. Whole milliseconds, checked, so no
/// value can overflow.
fn parse_timespan(text: &str) -> anyhow::Result<Option<Duration>> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().with_context(|| format!("{text:?} is not a time span such as 30, 30s or 2min"))?;
    let millis_per_unit: u64 = match unit.trim() {
        "" | "s" | "sec" => 1000,
        "ms" | "msec" => 1,
        "m" | "min" => 60_000,
        "h" | "hr" => 3_600_000,
        other => bail!("unknown time unit {other:?} in {text:?}"),
    };
    let millis = number.checked_mul(millis_per_unit).with_context(|| format!("{text:?} is too long a time span"))?;
    Ok((millis != 0).then(|| Duration::from_millis(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(line: &str) -> anyhow::Result<BootParams> {
        BootParams::from_cmdline(&Cmdline::parse(line))
    }

    #[test]
    fn ignition_config_url_by_any_of_its_names_ignitions_first() {
        assert_eq!(params("console=ttyS0").unwrap().ignition_config_url, None);
        assert_eq!(params("ignition.config.url=").unwrap().ignition_config_url, None, "an empty URL is no URL, as in Ignition");
        let p = params("coreos.config.url=data:,c flatcar.config.url=oem:///f.ign").unwrap();
        assert_eq!(p.ignition_config_url, Some(("flatcar.config.url", "oem:///f.ign".to_string())));
        let p = params("ignition.config.url=data:,a flatcar.config.url=data:,b coreos.config.url=data:,c").unwrap();
        assert_eq!(p.ignition_config_url, Some(("ignition.config.url", "data:,a".to_string())));
    }

    #[test]
    fn platform_from_ignition_then_flatcar_then_coreos_in_ignitions_names() {
        assert_eq!(params("console=ttyS0").unwrap().platform, None);
        assert_eq!(params("flatcar.oem.id=ec2").unwrap().platform.as_deref(), Some("aws"));
        assert_eq!(params("coreos.oem.id=gce").unwrap().platform.as_deref(), Some("gcp"));
        assert_eq!(params("flatcar.oem.id=pxe").unwrap().platform.as_deref(), Some("metal"));
        assert_eq!(params("coreos.oem.id=qemu flatcar.oem.id=digitalocean").unwrap().platform.as_deref(), Some("digitalocean"));
        assert_eq!(params("flatcar.oem.id=ec2 ignition.platform.id=qemu").unwrap().platform.as_deref(), Some("qemu"));
        assert_eq!(params("ignition.platform.id=ec2").unwrap().platform.as_deref(), Some("ec2"), "Ignition's own name is taken as it is");
        // Checked by first boot, which alone reads it: a later boot does not fail on it.
        assert_eq!(params("ignition.platform.id=../etc").unwrap().platform.as_deref(), Some("../etc"));
    }

    #[test]
    fn defaults_are_flatcars() {
        let p = params("console=ttyS0").unwrap();
        assert_eq!(p.usr_data, DeviceSpec::PartLabel("USR-A".into()));
        assert_eq!(p.root, DeviceSpec::Label("ROOT".into()));
        assert_eq!(p.device_timeout, Some(Duration::from_secs(300)));
        assert_eq!(p.emergency, EmergencyAction::Reboot);
        assert_eq!(p.usr_corruption, UsrCorruption::Panic);
        assert!(!p.shell);
        assert_eq!(p.break_before, None);
    }

    #[test]
    fn flatcar_grub_line_picks_the_verity_data_device() {
        let p = params(
            "mount.usr=/dev/mapper/usr verity.usr=PARTUUID=e03dd35c-7c2d-4a47-b3fe-27f15780a57c \
             verity.usrhash=ABCD rootflags=rw mount.usrflags=ro",
        )
        .unwrap();
        assert_eq!(p.usr_data, DeviceSpec::PartUuid("e03dd35c-7c2d-4a47-b3fe-27f15780a57c".into()));
        assert_eq!(p.usr_root_hash.as_deref(), Some("abcd"));
        assert_eq!(p.root_flags.as_deref(), Some("rw"));
        assert_eq!(p.usr_flags.as_deref(), Some("ro"));
    }

    #[test]
    fn systemd_names_work_too() {
        let p = params(
            "systemd.verity_usr_data=PARTLABEL=USR-B systemd.verity_usr_hash=/dev/vdb usrhash=ff \
                        systemd.verity_usr_options=restart-on-corruption",
        )
        .unwrap();
        assert_eq!(p.usr_data, DeviceSpec::PartLabel("USR-B".into()));
        assert_eq!(p.usr_hash_device, Some(DeviceSpec::Path("/dev/vdb".into())));
        assert_eq!(p.usr_root_hash.as_deref(), Some("ff"));
        assert_eq!(p.usr_corruption, UsrCorruption::Restart);
        assert_eq!(params("usr=PARTLABEL=X").unwrap().usr_data, DeviceSpec::PartLabel("X".into()));
    }

    #[test]
    fn time_spans() {
        for (text, expected) in [("5", Some(5.0)), ("5s", Some(5.0)), ("2min", Some(120.0)), ("1500ms", Some(1.5)), ("0", None)] {
            assert_eq!(parse_timespan(text).unwrap(), expected.map(Duration::from_secs_f64), "{text}");
        }
        assert!(parse_timespan("soon").is_err());
        assert!(parse_timespan("5 days").is_err());
        // Values that once overflowed a float conversion, a panic in PID 1.
        for huge in ["18446744073709551615", "10000000000000000000h", "5000000000000000000min", "99999999999999999999"] {
            assert!(parse_timespan(huge).is_err(), "{huge}");
        }
        assert_eq!(parse_timespan("18446744073709551615ms").unwrap(), Some(Duration::from_millis(u64::MAX)));
    }

    #[test]
    fn debug_switches() {
        let p = params("rd.shell rd.break=usr rd.emergency=poweroff init=/bin/sh").unwrap();
        assert!(p.shell);
        assert_eq!(p.break_before.as_deref(), Some("usr"));
        assert_eq!(p.emergency, EmergencyAction::Poweroff);
        assert_eq!(p.init.as_deref(), Some("/bin/sh"));
        assert_eq!(params("rd.break").unwrap().break_before.as_deref(), Some("switch-root"));
        assert!(!params("rd.shell=0").unwrap().shell);
    }

    #[test]
    fn first_boot_as_flatcar_coreos_and_ignition_say_it() {
        use FirstBootRequest::*;
        for (line, expected) in [
            ("console=ttyS0", Unsaid),
            ("flatcar.first_boot=detected", Detected),
            ("coreos.first_boot=detected", Detected),
            ("flatcar.first_boot=1", Yes),
            ("flatcar.first_boot=yes", Yes),
            ("flatcar.first_boot", No),
            ("flatcar.first_boot=", No),
            ("flatcar.first_boot=0", No),
            ("coreos.first_boot=off", No),
            ("flatcar.first_boot=1 flatcar.first_boot=0", No),
            ("ignition.firstboot", Yes),
            ("ignition.firstboot=1", Yes),
            ("ignition.firstboot=0", No),
            ("flatcar.first_boot=0 ignition.firstboot", Yes),
            ("ignition.firstboot flatcar.first_boot=detected", Detected),
        ] {
            assert_eq!(params(line).unwrap().first_boot, expected, "{line}");
        }
    }

    #[test]
    fn root_filesystem_and_image_disk_guid() {
        let p = params("console=ttyS0").unwrap();
        assert_eq!(p.root_filesystem, FsKind::Ext4);
        assert_eq!(p.image_disk_guid.to_string(), IMAGE_DISK_GUID);
        let p = params("keel.root.fs=btrfs flatcar.randomize_disk_guid=ABCDEF01-2345-6789-ABCD-EF0123456789").unwrap();
        assert_eq!(p.root_filesystem, FsKind::Btrfs);
        assert_eq!(p.image_disk_guid.to_string(), "abcdef01-2345-6789-abcd-ef0123456789");
        assert_eq!(params("flatcar.randomize_disk_guid=").unwrap().image_disk_guid.to_string(), IMAGE_DISK_GUID);
        assert_eq!(params("keel.root.fs=xfs").unwrap().root_filesystem, FsKind::Xfs);
    }

    #[test]
    fn bad_values_are_errors_that_name_the_parameter() {
        for line in [
            "rd.emergency=explode",
            "keel.root.fs=ntfs",
            "flatcar.randomize_disk_guid=1",
            "rd.timeout=soon",
            "root=sda1",
            "verity.usr=nothing",
            "usrhash",
            "systemd.verity_usr_options=ignore-corruption",
        ] {
            let error = format!("{:#}", params(line).unwrap_err());
            let key = line.split('=').next().unwrap();
            assert!(error.contains(key.trim_start_matches("verity.")), "{line}: {error}");
        }
    }
}
