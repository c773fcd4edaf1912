//! `keel uki build` and `keel uki inspect`: unified kernel images (keel-uki), signed for
//! Secure Boot through sbsign.

use anyhow::Context;
use clap::{Args, Subcommand};
use keel_disk::printable;
use keel_verity::encode_hex;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum UkiCommand {
    /// a unified kernel image: kernel, initrd, command line and os-release on systemd's EFI stub
    ///
    /// One PE file that Secure Boot verifies whole: under Secure Boot the stub ignores a command line from the boot
    /// loader, so the initrd (and the root hash baked into it) and the command line are what was signed. The unsigned
    /// UKI depends only on its inputs, byte for byte; with --sign-key and --sign-cert, sbsign signs it.
    Build(BuildArgs),
    /// a UKI's sections with their sizes and SHA-256, its command line, os-release and kernel release, and whether it is
    /// signed
    Inspect(InspectArgs),
}

impl UkiCommand {
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            UkiCommand::Build(args) => build(&args),
            UkiCommand::Inspect(args) => inspect(&args),
        }
    }
}

#[derive(Args)]
pub struct BuildArgs {
    /// the kernel (an x86 bzImage)
    #[arg(long, value_name = "VMLINUZ")]
    kernel: PathBuf,
    /// the initrd (`keel initrd build`'s)
    #[arg(long, value_name = "FILE")]
    initrd: PathBuf,
    /// the kernel command line; part of what is signed, and the only one the kernel gets under Secure Boot
    #[arg(long, value_name = "TEXT")]
    cmdline: String,
    /// the os-release of the OS it boots (boot menus show its PRETTY_NAME)
    #[arg(long, value_name = "FILE")]
    os_release: PathBuf,
    /// the kernel release for the .uname section [default: read from the kernel]
    #[arg(long, value_name = "RELEASE")]
    uname: Option<String>,
    /// the EFI stub (unsigned)
    #[arg(long, value_name = "FILE", default_value = keel_uki::DEFAULT_STUB)]
    stub: PathBuf,
    /// the UKI file to write
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// sign with this private key (PEM) through sbsign
    #[arg(long, value_name = "KEY", requires = "sign_cert")]
    sign_key: Option<PathBuf>,
    /// the certificate (PEM) of --sign-key, as enrolled in the firmware's db
    #[arg(long, value_name = "CERT", requires = "sign_key")]
    sign_cert: Option<PathBuf>,
}

/// A signing key and its certificate.
pub struct Signer<'a> {
    pub key: &'a Path,
    pub certificate: &'a Path,
}

impl<'a> Signer<'a> {
    /// The signer of `--sign-key` and `--sign-cert`, which clap only takes together.
    pub fn of(key: Option<&'a Path>, certificate: Option<&'a Path>) -> Option<Signer<'a>> {
        Some(Signer { key: key?, certificate: certificate? })
    }
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn build(args: &BuildArgs) -> anyhow::Result<()> {
    let signer = Signer::of(args.sign_key.as_deref(), args.sign_cert.as_deref());
    let parts =
        UkiInputs { kernel: &args.kernel, initrd: &args.initrd, cmdline: &args.cmdline, os_release: &read(&args.os_release, "the os-release")? };
    let bytes = write_uki(&args.stub, &parts, args.uname.as_deref(), &args.output, signer.as_ref())?;
    crate::print_out(&format!("uki: {} ({bytes} bytes{})\n", args.output.display(), if signer.is_some() { ", signed" } else { "" }))
}

/// What `write_uki` puts in a UKI besides the stub.
pub struct UkiInputs<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub cmdline: &'a str,
    pub os_release: &'a [u8],
}

/// Builds the UKI of `inputs` on `stub` at `output`, signed when `signer` is given (the
/// unsigned image goes to a file beside `output` first, for sbsign); returns its size.
pub fn write_uki(stub: &Path, inputs: &UkiInputs, uname: Option<&str>, output: &Path, signer: Option<&Signer>) -> anyhow::Result<u64> {
    let image = keel_uki::build(&keel_uki::Parts {
        stub: &read(stub, "the EFI stub")?,
        kernel: &read(inputs.kernel, "the kernel")?,
        initrd: &read(inputs.initrd, "the initrd")?,
        cmdline: inputs.cmdline,
        os_release: inputs.os_release,
        uname,
    })?;
    match signer {
        None => std::fs::write(output, &image).with_context(|| format!("cannot write {}", output.display()))?,
        Some(signer) => {
            // A name no one else uses: it is deleted after signing.
            let unsigned = output.with_extension(format!("keel-unsigned-{}.efi", std::process::id()));
            std::fs::write(&unsigned, &image).with_context(|| format!("cannot write {}", unsigned.display()))?;
            let signed = keel_uki::sign(&unsigned, signer.key, signer.certificate, output);
            let _ = std::fs::remove_file(&unsigned);
            signed.with_context(|| format!("cannot sign {}", output.display()))?;
        }
    }
    Ok(std::fs::metadata(output).with_context(|| format!("cannot read {}", output.display()))?.len())
}

#[derive(Args)]
pub struct InspectArgs {
    /// the UKI (any 64-bit PE image)
    uki: PathBuf,
}

/// Sections whose content is text worth showing.
const TEXT_SECTIONS: &[&str] = &[".cmdline", ".uname", ".osrel", ".sbat"];

fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let image = read(&args.uki, "the UKI")?;
    let inspection = keel_uki::inspect(&image).with_context(|| format!("in {}", args.uki.display()))?;
    let mut out = format!("{:<9} {:>10} {:>10} {:>10} {:>10}  sha256\n", "section", "offset", "file", "address", "size");
    for section in &inspection.sections {
        out += &format!(
            "{:<9} {:>10} {:>10} {:>#10x} {:>10}  {}\n",
            section.name,
            section.file_offset,
            section.file_size,
            section.virtual_address,
            section.virtual_size,
            encode_hex(&section.sha256)
        );
    }
    for (part, names) in inspection.ambiguous_parts() {
        let read = names.last().copied().unwrap_or_default();
        out += &format!("warning: {} sections are {part} to systemd's stub ({}), which reads the last: {read}\n", names.len(), names.join(", "));
    }
    for section in inspection.sections.iter().filter(|s| TEXT_SECTIONS.contains(&s.name.as_str())) {
        let text = String::from_utf8_lossy(image.get(section.content.clone()).unwrap_or_default());
        for line in text.trim_end_matches(['\0', '\n']).lines() {
            out += &format!("{}: {}\n", section.name, printable(line));
        }
    }
    out += &match inspection.signature_table {
        Some((offset, size)) => format!("signature: {size} bytes at offset {offset} (check it: sbverify --cert DB.crt {})\n", args.uki.display()),
        None => "signature: none\n".to_string(),
    };
    let matches = if inspection.checksum_matches { "matches" } else { "does not match" };
    out += &format!("checksum: {:#010x} ({matches} the file)\n", inspection.checksum);
    crate::print_out(&out)
}
