/// One step of the boot plan, as a person reading a failure needs to see it.
#[derive(Debug)]
pub struct Stage {
    /// The name `rd.break=` takes and logs show.
    pub name: &'static str,
    pub doing: &'static str,
    /// What to do when this stage fails.
    pub remedy: &'static str,
}

pub const MOUNTS: Stage = Stage {
    name: "mounts",
    doing: "mount /proc, /sys, /dev and /run",
    remedy: "The kernel lacks proc, sysfs, devtmpfs or tmpfs support; use a kernel built for keel.",
};
pub const CONFIG: Stage = Stage {
    name: "config",
    doing: "read the kernel command line and the image manifest baked into the initrd",
    remedy: "Fix the kernel command line parameter named above, or rebuild the initrd with `keel initrd build`.",
};
pub const MODULES: Stage = Stage {
    name: "modules",
    doing: "load the kernel modules the initrd lists",
    remedy:
        "The initrd's modules must come from the running kernel (uname -r); rebuild it with `keel initrd build --kernel-modules` for this kernel.",
};
pub const USR: Stage = Stage {
    name: "usr",
    doing: "verify /usr with dm-verity",
    remedy: "/usr was NOT used. If the USR partition was not found, check the disk and verity.usr=/mount.usr=. If it \
             did not match, it is damaged or does not belong to this initrd: boot the other slot \
             (verity.usr=PARTLABEL=USR-B) or reinstall the image together with its initrd.",
};
pub const FIRST_BOOT: Stage = Stage {
    name: "first-boot",
    doing: "find ROOT's disk and decide whether this is a first boot",
    remedy: "Check root= on the kernel command line; LABEL= and PARTLABEL= match only on the disk keel booted from.",
};
pub const IGNITION_FETCH: Stage = Stage {
    name: "ignition-fetch",
    doing: "find the Ignition configs (command line, OEM partition, QEMU fw_cfg, initrd), merge and check them, and verify every \
            resource they name",
    remedy: "Nothing was written: the first-boot flag stays, and the next boot tries again. Fix the config named above (the \
             JSON path says where), or the source it came from; validate it with `keel ignition validate`.",
};
pub const IGNITION_KARGS: Stage = Stage {
    name: "ignition-kargs",
    doing: "write the config's kernelArguments to the ESP for the boot loader, and reboot once when they changed",
    remedy: "The first-boot flag stays. The boot loader must apply keel/kernel-args.conf or keel/kernel-args.grub from the ESP \
             (docs/ignition.md); without it, remove kernelArguments from the config.",
};
pub const IGNITION_DISKS: Stage = Stage {
    name: "ignition-disks",
    doing: "give the boot disk its own GUIDs and grow ROOT to fill the disk",
    remedy: "Nothing is lost: every first-boot step converges when run again. Check that ROOT is the last partition; a disk \
             smaller than the image, or a GPT damaged in both copies, needs the image written again.",
};
pub const ROOT: Stage = Stage {
    name: "root",
    doing: "format ROOT if blank (or if a format was cut short), mount it, and on first boot grow its filesystem",
    remedy: "Check root= on the kernel command line and that the ROOT partition holds a filesystem keel can mount (or is \
             blank). A format cut short is redone on the next boot; flatcar.first_boot=0 skips first boot's steps.",
};
pub const ETC: Stage = Stage {
    name: "etc",
    doing: "mount /etc as an overlay on the defaults in /usr",
    remedy: "The /usr image must contain /usr/share/<os>/etc, and ROOT must be writable.",
};
pub const IGNITION_FILES: Stage = Stage {
    name: "ignition-files",
    doing: "apply the Ignition config to the real root: users and groups, files, directories, links, units",
    remedy: "The first-boot flag stays, so the next boot applies the config again, and what is already in place is kept. The \
             error names the config entry (JSON path) and the path in the root.",
};
pub const FIRST_BOOT_DONE: Stage = Stage {
    name: "first-boot-done",
    doing: "clear the first-boot flag on the ESP now that every first-boot step succeeded",
    remedy: "This stage does not fail the boot: a flag it cannot clear stays, and the next boot runs first boot \
             again, which converges. Check the ESP (EFI-SYSTEM, vfat) with fsck.vfat.",
};
pub const SWITCH_ROOT: Stage = Stage {
    name: "switch-root",
    doing: "switch to the real root and start its init",
    remedy: "The real root must have an executable init (init= on the kernel command line, default /sbin/init).",
};

/// The stages `rd.break=` can stop before, in boot order: the first two run before the
/// command line has been read. The Ignition stages and first-boot-done run on first boot only.
pub const BREAKABLE: [&Stage; 11] =
    [&MODULES, &USR, &FIRST_BOOT, &IGNITION_FETCH, &IGNITION_KARGS, &IGNITION_DISKS, &ROOT, &ETC, &IGNITION_FILES, &FIRST_BOOT_DONE, &SWITCH_ROOT];
