//! `keel_cmdline::Cmdline::parse` and `BootParams::from_cmdline` on any text, taken as
//! keel-init takes /proc/cmdline (`read_to_string`: bytes that are not UTF-8 never get
//! this far). Held to: `--` ends the kernel's words; every device spec keel accepts reads
//! back from its own text; a root hash is lower case; a timeout is never zero (0 means
//! "for ever", which is `None`).

use crate::Seed;
use keel_cmdline::{BootParams, Cmdline, DeviceSpec};

pub fn run(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else { return };
    let cmdline = Cmdline::parse(text);
    // Unless the text ends inside quotes, whatever follows a `--` is init's. Only where all
    // whitespace is ASCII: the split trims any Unicode whitespace off the ends of the line
    // but splits words at ASCII whitespace only, so a trailing U+00A0 counts only at the end.
    let ends_unquoted = text.matches('"').count() % 2 == 0;
    if ends_unquoted && text.chars().all(|c| !c.is_whitespace() || c.is_ascii_whitespace()) {
        assert_eq!(Cmdline::parse(&format!("{text} -- {text}")), cmdline, "words after `--` changed the command line");
    }
    let Ok(params) = BootParams::from_cmdline(&cmdline) else { return };
    for spec in [Some(&params.usr_data), params.usr_hash_device.as_ref(), Some(&params.root)].into_iter().flatten() {
        assert_eq!(DeviceSpec::parse(&spec.to_string()).ok().as_ref(), Some(spec), "device {spec:?} does not read back from its text {spec}");
    }
    if let Some(hash) = &params.usr_root_hash {
        assert!(!hash.bytes().any(|b| b.is_ascii_uppercase()), "root hash {hash:?} is not lower case");
    }
    assert!(params.device_timeout.is_none_or(|timeout| !timeout.is_zero()), "a zero device timeout");
}

pub fn seeds() -> Vec<Seed> {
    let usr_hash = "ca9e9fd46f4a8a4e9c6b6e5e1d7f1d54d0b7dfba49aa7c5b3ac8e9b0b2ff4b1e";
    let lines = [
        // What Flatcar's grub passes on QEMU, with its first-boot flag seen.
        (
            "flatcar-grub",
            format!(
                "BOOT_IMAGE=/flatcar/vmlinuz-a mount.usr=/dev/mapper/usr verity.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132 \
                 rootflags=rw mount.usrflags=ro consoleblank=0 root=LABEL=ROOT console=ttyS0,115200n8 console=tty0 \
                 flatcar.first_boot=detected flatcar.oem.id=qemu verity.usrhash={usr_hash}"
            ),
        ),
        // keel's VM tests.
        ("keel-vm-test", "console=ttyS0 quiet panic=-1 rd.emergency=poweroff rd.timeout=30s keel.root.fs=xfs rd.break=root".to_string()),
        // systemd's names, a separate hash device, and the choices keel-init refuses or waits on.
        (
            "systemd-names",
            "systemd.verity_usr_data=PARTLABEL=USR-B systemd.verity_usr_hash=/dev/vda4 systemd.verity_usr_options=restart-on-corruption \
             mount.usrfstype=ext4 usrhash=ABCDEF ignition.firstboot coreos.first_boot=0 rd.timeout=0 rd.emergency=halt \
             flatcar.randomize_disk_guid=00000000-0000-0000-0000-000000000001 root=UUID=0B9CDB6F-6F0E-4D6A-9D5E-5A1F1E1F2A3B"
                .to_string(),
        ),
        // Quotes, a bare rd.break and rd.shell, and init's own arguments after `--`.
        ("quoting", "  root=\"LABEL=MY ROOT\" \"rootflags=a b\" rd.shell rd.break init=/sbin/init rd.timeout=2min -- single\n".to_string()),
    ];
    lines.into_iter().map(|(name, line)| Seed { name, bytes: line.into_bytes() }).collect()
}
