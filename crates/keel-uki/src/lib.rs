//! Unified kernel images (UKIs): the kernel, the initrd, the kernel command line and the
//! OS's os-release appended as sections to systemd's EFI stub, one PE file that Secure
//! Boot verifies whole. The stub hands Linux the embedded initrd and command line; under
//! Secure Boot it ignores a command line from the boot loader, so everything keel-init
//! trusts (the initrd's root hash, the command line) is covered by the one signature.
//!
//! The layout is what systemd's stub reads and ukify writes: sections `.osrel`,
//! `.cmdline`, `.uname`, `.initrd` and `.linux`, each at a page-aligned address after the
//! stub's own sections, in the file after them at the stub's file alignment. The stub's
//! `.sbat` (its generation for shim's revocation) is kept as it is: a keel UKI is signed
//! with the image builder's key and loaded by the firmware, not through shim. The result
//! depends only on its inputs, byte for byte; signing is `sbsign`'s (`sign`).

mod pe;

use anyhow::{bail, ensure, Context};
use std::path::Path;
use std::process::Command;

pub use pe::{inspect, Inspection, Section};

/// Where Debian's systemd-boot-efi package installs the x86-64 stub.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// x86's COMMAND_LINE_SIZE, terminating NUL included: the kernel cuts a longer line.
const MAX_CMDLINE_BYTES: usize = 2048;

/// What a UKI is made of.
pub struct Parts<'a> {
    /// The EFI stub (unsigned).
    pub stub: &'a [u8],
    /// The kernel's bzImage.
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    /// The kernel command line, as the stub passes it to Linux.
    pub cmdline: &'a str,
    /// The os-release of the OS the UKI boots (boot loaders show its PRETTY_NAME).
    pub os_release: &'a [u8],
    /// The kernel's release (`uname -r`); read from the kernel when not given.
    pub uname: Option<&'a str>,
}

/// The unsigned UKI of `parts`.
pub fn build(parts: &Parts) -> anyhow::Result<Vec<u8>> {
    let cmdline = parts.cmdline.trim();
    // systemd's stub takes the boot loader's command line whenever its own is empty, Secure
    // Boot or not: an empty one would leave the kernel's command line unsigned.
    ensure!(!cmdline.is_empty(), "the command line is empty: the stub would then take any command line the boot loader passes");
    ensure!(cmdline.len() < MAX_CMDLINE_BYTES, "the command line has {} bytes; the kernel takes at most {}", cmdline.len(), MAX_CMDLINE_BYTES - 1);
    ensure!(!cmdline.chars().any(char::is_control), "the command line has a control character (one line of words, please)");
    ensure!(std::str::from_utf8(parts.os_release).is_ok(), "the os-release is not UTF-8 text");
    let release = kernel_release(parts.kernel).context("the kernel is not an x86 bzImage")?;
    let uname = parts.uname.map_or(release, str::to_string);
    ensure!(!uname.is_empty() && !uname.chars().any(|c| c.is_whitespace() || c.is_control()), "the kernel release {uname:?} is not one word");
    pe::append_sections(
        parts.stub,
        &[
            (".osrel", parts.os_release),
            (".cmdline", cmdline.as_bytes()),
            (".uname", uname.as_bytes()),
            (".initrd", parts.initrd),
            // Last: the largest, and the stub needs nothing after it.
            (".linux", parts.kernel),
        ],
    )
    .context("cannot add the UKI's sections to the EFI stub")
}

/// The release of an x86 bzImage (`uname -r`): the first word of the version string its
/// setup header points to (Linux's boot protocol, 2.00 and later: "HdrS" at 0x202, the
/// string's offset less 0x200 at 0x20e).
pub fn kernel_release(kernel: &[u8]) -> anyhow::Result<String> {
    let word = |at: usize| kernel.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    ensure!(kernel.get(0x202..0x206) == Some(b"HdrS"), "no Linux boot protocol header (HdrS)");
    let pointer = word(0x20e).context("the setup header is cut short")?;
    ensure!(pointer != 0, "the kernel does not say its version");
    let start = usize::from(pointer) + 0x200;
    let text = kernel.get(start..kernel.len().min(start + 256)).context("the kernel's version string is outside the file")?;
    let text = text.split(|&b| b == 0).next().unwrap_or_default();
    match std::str::from_utf8(text).ok().and_then(|text| text.split_whitespace().next()) {
        Some(release) => Ok(release.to_string()),
        None => bail!("the kernel's version string is not text"),
    }
}

/// Signs `unsigned` with `key` and `certificate` (PEM) into `output`, through sbsign
/// (sbsigntool): an Authenticode signature over the headers and every section, which
/// UEFI Secure Boot checks against its db. The signature carries the signing time, so a
/// signed UKI differs between signings; the unsigned one does not.
pub fn sign(unsigned: &Path, key: &Path, certificate: &Path, output: &Path) -> anyhow::Result<()> {
    let result = Command::new("sbsign")
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(certificate)
        .arg("--output")
        .arg(output)
        .arg(unsigned)
        .output()
        .context("cannot run sbsign (Debian package sbsigntool)")?;
    ensure!(result.status.success(), "sbsign failed ({}): {}", result.status, String::from_utf8_lossy(&result.stderr).trim());
    // sbsign warns, and still signs, when bytes lie outside every section: bytes no
    // signature covers. keel's UKIs have none; a warning means the input was not one.
    let warnings = String::from_utf8_lossy(&result.stderr).lines().filter(|line| line.contains("warning")).collect::<Vec<_>>().join("; ");
    if !warnings.is_empty() {
        let _ = std::fs::remove_file(output);
        bail!("sbsign warned: {warnings}");
    }
    Ok(())
}
