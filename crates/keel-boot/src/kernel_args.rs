//! Ignition's `kernelArguments` (spec 3.3+): arguments that should or should not be on the
//! kernel command line. Ignition leaves the change to a distribution's helper, which edits the
//! boot loader's configuration and reboots when it changed anything; keel writes the arguments
//! to the ESP, where the boot loader reads them, and reboots once. The next boot finds them on its
//! command line and goes on; a boot loader that does not apply them stops first boot with an
//! error rather than a reboot loop.
//!
//! On the ESP (docs/ignition.md has the format):
//! - `keel/kernel-args.conf`: the record, `add ARGUMENT` and `remove ARGUMENT` lines, which keel reads
//!   back; a systemd-boot entry or a UKI addon (`ukify build --cmdline`) is made from it;
//! - `keel/kernel-args.grub`: the same for GRUB, `source`d by its configuration, as Flatcar's GRUB
//!   sources the OEM partition's grub.cfg: `linux_append` gains the added arguments, and
//!   `keel_kernel_args_remove` names the removed ones for a configuration that builds its command
//!   line from variables.

use crate::devices::BootDisk;
use crate::first_boot::{find_esp, with_esp};
use anyhow::{bail, Context};
use keel_cmdline::Cmdline;
use keel_disk::FIRST_BOOT_FLAG;
use keel_ignition::config::Latest;
use std::io::{Read, Write};
use std::path::Path;

pub const RECORD: &str = "keel/kernel-args.conf";
pub const GRUB_SNIPPET: &str = "keel/kernel-args.grub";
/// The most of the record keel reads: it is keel's, yet on an untrusted disk.
const MAX_RECORD_BYTES: u64 = 64 << 10;
/// Parameters that decide first boot: a config may neither add nor remove them.
const FIRST_BOOT_KEYS: [&str; 3] = ["flatcar.first_boot", "coreos.first_boot", "ignition.firstboot"];

/// The arguments keel has asked the boot loader to add and to remove, as the ESP records them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelArgs {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// What first boot does about a config's `kernelArguments`.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// The command line already has every argument that should exist and none that should not.
    InEffect,
    /// Write this record to the ESP, then reboot.
    Write(KernelArgs),
}

impl KernelArgs {
    /// One argument a line, `add ARG` or `remove ARG`: an argument may hold spaces inside quotes
    /// (`dyndbg="file x.c +p"`).
    pub fn parse(text: &str) -> anyhow::Result<KernelArgs> {
        let mut args = KernelArgs::default();
        for line in text.lines().filter(|line| !line.trim().is_empty() && !line.starts_with('#')) {
            match line.split_once(' ') {
                Some(("add", argument)) => args.add.push(argument.to_string()),
                Some(("remove", argument)) => args.remove.push(argument.to_string()),
                _ => bail!("{RECORD}: {line:?} is not an `add ARGUMENT` or `remove ARGUMENT` line"),
            }
        }
        Ok(args)
    }

    pub fn to_record(&self) -> String {
        let mut text = String::from("# Kernel arguments from Ignition's kernelArguments, written by keel at first boot.\n");
        for (verb, list) in [("add", &self.add), ("remove", &self.remove)] {
            list.iter().for_each(|argument| text.push_str(&format!("{verb} {argument}\n")));
        }
        text
    }

    /// GRUB script: each list in one double-quoted string, in which `\`, `"` and `$` are escaped.
    pub fn to_grub(&self) -> String {
        let quoted = |list: &[String]| list.join(" ").replace('\\', "\\\\").replace('"', "\\\"").replace('$', "\\$");
        format!(
            "# Kernel arguments from Ignition's kernelArguments, written by keel at first boot.\nset linux_append=\"$linux_append {}\"\nset keel_kernel_args_remove=\"{}\"\n",
            quoted(&self.add),
            quoted(&self.remove)
        )
    }
}

/// A config's argument as the kernel will show it in /proc/cmdline, quotes resolved: an argument
/// must be one word of a command line, without control characters (the record keeps one a line).
fn normalise(argument: &str) -> anyhow::Result<String> {
    let words: Vec<String> = Cmdline::parse(argument).words().collect();
    let word = match words.as_slice() {
        [word] if !argument.chars().any(char::is_control) => word,
        _ => bail!("the kernel argument {argument:?} is not one argument of a command line (quote spaces: key=\"a b\")"),
    };
    let key = word.split_once('=').map_or(word.as_str(), |(key, _)| key);
    if FIRST_BOOT_KEYS.contains(&key) {
        bail!(
            "the kernel argument {argument:?} would decide whether later boots are first boots, which only the ESP's flag does \
             (a first boot cut short must run again, and a finished one must not)"
        );
    }
    Ok(word.clone())
}

/// An argument on a command line is one word of it, whole: Ignition's helpers compare words.
fn has(words: &[String], argument: &str) -> bool {
    words.iter().any(|word| word == argument)
}

/// Adds `argument` to `list` unless it is there, and takes it out of `other`.
fn move_into(list: &mut Vec<String>, other: &mut Vec<String>, argument: &str) {
    other.retain(|existing| existing != argument);
    if !list.iter().any(|existing| existing == argument) {
        list.push(argument.to_string());
    }
}

/// What to do, given the arguments the config wants, the running kernel's command line and the
/// record on the ESP. A record that already says it all while the command line does not show
/// it means the boot loader ignores the record: rebooting again would loop.
pub fn decide(should_exist: &[String], should_not_exist: &[String], cmdline: &str, recorded: &KernelArgs) -> anyhow::Result<Decision> {
    let words: Vec<String> = Cmdline::parse(cmdline).words().collect();
    let mut missing = false;
    for argument in should_exist {
        missing |= !has(&words, &normalise(argument)?);
    }
    let mut unwanted = false;
    for argument in should_not_exist {
        unwanted |= has(&words, &normalise(argument)?);
    }
    if !missing && !unwanted {
        return Ok(Decision::InEffect);
    }
    // Recorded as written (a boot loader passes the quotes on), without surrounding blanks.
    let mut wanted = recorded.clone();
    for argument in should_exist {
        move_into(&mut wanted.add, &mut wanted.remove, argument.trim());
    }
    for argument in should_not_exist {
        move_into(&mut wanted.remove, &mut wanted.add, argument.trim());
    }
    if wanted == *recorded {
        bail!(
            "the ESP's {RECORD} already asks for these kernel arguments, but this boot's command line does not have them: the boot \
             loader does not apply them (docs/ignition.md says how it reads {RECORD} or {GRUB_SNIPPET}); first boot stops here \
             rather than reboot again"
        );
    }
    Ok(Decision::Write(wanted))
}

/// Writes `name` under `esp` whole or not at all: a temporary file, flushed, renamed into place,
/// and the rename flushed before anything else is written.
fn write_replacing(esp: &Path, name: &str, contents: &str) -> anyhow::Result<()> {
    let path = esp.join(name);
    let temporary = path.with_extension("new");
    let mut file = std::fs::File::create(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("cannot rename {} into place", temporary.display()))?;
    rustix::fs::syncfs(&file).context("cannot flush the ESP")
}

/// Reads the record from the mounted ESP at `esp`; none there is an empty one.
pub fn read_record(esp: &Path) -> anyhow::Result<KernelArgs> {
    let path = esp.join(RECORD);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(KernelArgs::default()),
        Err(error) => return Err(error).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() as u64 > MAX_RECORD_BYTES {
        bail!("{} is larger than {MAX_RECORD_BYTES} bytes: it is not keel's", path.display());
    }
    KernelArgs::parse(&String::from_utf8_lossy(&bytes))
}

/// Writes the GRUB snippet, then the record, to the mounted ESP at `esp`, each flushed before
/// the next: the record is what a later boot compares with, so it never claims more than the
/// snippet holds.
pub fn write_record(esp: &Path, args: &KernelArgs) -> anyhow::Result<()> {
    let dir = esp.join("keel");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_replacing(esp, GRUB_SNIPPET, &args.to_grub())?;
    write_replacing(esp, RECORD, &args.to_record())
}

/// Makes sure the ESP holds the first-boot flag, so that the boot after the reboot is a first
/// boot too, even when only this boot's command line asked for one.
fn keep_first_boot_flag(esp: &Path) -> anyhow::Result<()> {
    let flag = esp.join(FIRST_BOOT_FLAG);
    if flag.exists() {
        return Ok(());
    }
    let dir = flag.parent().unwrap_or(esp);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = std::fs::File::create(&flag).with_context(|| format!("cannot create {}", flag.display()))?;
    rustix::fs::syncfs(&file).context("cannot flush the ESP")
}

/// The config's `kernelArguments`, when it asks for any: (should exist, should not exist).
pub fn requested(config: &Latest) -> Option<(Vec<String>, Vec<String>)> {
    let arguments = config.kernel_arguments.as_ref()?;
    let should_exist = arguments.should_exist.clone().unwrap_or_default();
    let should_not_exist = arguments.should_not_exist.clone().unwrap_or_default();
    (!should_exist.is_empty() || !should_not_exist.is_empty()).then_some((should_exist, should_not_exist))
}

/// `ignition-kargs`: true when the record on the boot disk's ESP changed and the machine must
/// reboot for it to take effect; with a line for the log.
pub fn apply(should_exist: &[String], should_not_exist: &[String], boot_disk: &BootDisk) -> anyhow::Result<(bool, String)> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("cannot read /proc/cmdline")?;
    if decide(should_exist, should_not_exist, &cmdline, &KernelArgs::default())? == Decision::InEffect {
        return Ok((false, "the kernel arguments are on this boot's command line already".to_string()));
    }
    let esp = find_esp(boot_disk)?.context("the boot disk has no vfat ESP to write the kernel arguments to")?;
    with_esp(&esp, |root| match decide(should_exist, should_not_exist, &cmdline, &read_record(root)?)? {
        Decision::InEffect => Ok((false, "the kernel arguments are on this boot's command line already".to_string())),
        Decision::Write(args) => {
            write_record(root, &args)?;
            keep_first_boot_flag(root)?;
            let detail = format!(
                "{RECORD} on {} now adds [{}] and removes [{}]; rebooting so that the boot loader applies them",
                esp.node.display(),
                args.add.join(" "),
                args.remove.join(" ")
            );
            Ok((true, detail))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn arguments_already_in_effect_need_nothing() {
        let decision = decide(&strings(&["nosmt"]), &strings(&["quiet"]), "console=ttyS0 nosmt", &KernelArgs::default()).unwrap();
        assert_eq!(decision, Decision::InEffect);
        // A word is compared whole: `quiet=1` is not `quiet`, and `nosmt=force` is not `nosmt`.
        let decision = decide(&strings(&["nosmt"]), &strings(&["quiet"]), "quiet=1 nosmt=force", &KernelArgs::default()).unwrap();
        assert_eq!(decision, Decision::Write(KernelArgs { add: strings(&["nosmt"]), remove: strings(&["quiet"]) }));
    }

    #[test]
    fn a_change_is_recorded_on_top_of_what_was_recorded_before() {
        let recorded = KernelArgs { add: strings(&["a", "b"]), remove: strings(&["c"]) };
        let decision = decide(&strings(&["c", "d"]), &strings(&["a"]), "b", &recorded).unwrap();
        assert_eq!(decision, Decision::Write(KernelArgs { add: strings(&["b", "c", "d"]), remove: strings(&["a"]) }));
    }

    #[test]
    fn a_boot_loader_that_ignores_the_record_stops_first_boot_instead_of_a_reboot_loop() {
        let recorded = KernelArgs { add: strings(&["nosmt"]), remove: vec![] };
        let error = decide(&strings(&["nosmt"]), &[], "console=ttyS0", &recorded).unwrap_err().to_string();
        assert!(error.contains("the boot loader does not apply them"), "{error}");
    }

    #[test]
    fn the_record_reads_back_what_was_written_and_refuses_anything_else() {
        let args = KernelArgs { add: strings(&["nosmt", "dyndbg=\"file x.c +p\""]), remove: strings(&["quiet"]) };
        assert_eq!(KernelArgs::parse(&args.to_record()).unwrap(), args);
        assert_eq!(KernelArgs::parse("").unwrap(), KernelArgs::default());
        assert!(KernelArgs::parse("rm -rf /").is_err());
        assert!(args.to_grub().contains("set linux_append=\"$linux_append nosmt dyndbg=\\\"file x.c +p\\\"\"\n"), "{}", args.to_grub());
    }

    #[test]
    fn an_argument_cannot_break_out_of_the_grub_string() {
        let args = KernelArgs { add: strings(&["a=$(x)\\\"; reboot; echo \""]), remove: vec![] };
        let grub = args.to_grub();
        let line = grub.lines().find(|line| line.starts_with("set linux_append=")).unwrap();
        // Inside the quotes every ", $ and \ is escaped: the string ends where the line does.
        let inside = line.strip_prefix("set linux_append=\"$linux_append ").unwrap().strip_suffix('"').unwrap();
        let mut escaped = false;
        for character in inside.chars() {
            assert!(escaped || !matches!(character, '"' | '$'), "unescaped {character} in {line}");
            escaped = !escaped && character == '\\';
        }
    }

    #[test]
    fn arguments_are_compared_as_the_kernel_shows_them_and_must_be_one_argument() {
        let quoted = strings(&["dyndbg=\"file x.c +p\""]);
        let decision = decide(&quoted, &[], "console=ttyS0 \"dyndbg=file x.c +p\"", &KernelArgs::default()).unwrap();
        assert_eq!(decision, Decision::InEffect, "the kernel shows a quoted argument without its quotes");
        for bad in ["two words", "line\nbreak", ""] {
            let error = decide(&strings(&[bad]), &[], "", &KernelArgs::default()).unwrap_err().to_string();
            assert!(error.contains("is not one argument"), "{bad:?}: {error}");
        }
    }

    /// A boot loader that applies the record as docs/ignition.md says (and as the VM harness's
    /// `cmdline_with_esp_kernel_args` does): the removed arguments taken out, the added appended.
    fn loader(base: &str, record: &KernelArgs) -> String {
        let mut words: Vec<&str> = base.split_whitespace().filter(|word| !record.remove.iter().any(|r| r == word)).collect();
        words.extend(record.add.iter().map(String::as_str));
        words.join(" ")
    }

    /// How many times `boots` boots of a machine whose loader applies the record reboot (each
    /// written record is one); a refusal stops the boots.
    fn reboots_over_boots(should_exist: &[String], should_not_exist: &[String], boots: usize) -> usize {
        let mut recorded = KernelArgs::default();
        let mut reboots = 0;
        for _ in 0..boots {
            match decide(should_exist, should_not_exist, &loader("console=ttyS0", &recorded), &recorded) {
                Ok(Decision::InEffect) | Err(_) => break,
                Ok(Decision::Write(args)) => {
                    reboots += 1;
                    recorded = KernelArgs::parse(&args.to_record()).unwrap();
                }
            }
        }
        reboots
    }

    #[test]
    fn no_argument_makes_every_boot_reboot() {
        // Ignition takes any string as an argument; one the record or the kernel cannot hold as it
        // was written must reboot at most once, or be refused.
        for argument in ["", " ", "a b", " nosmt", "foo=\"a b\"", "\"quiet\"", "--", "a\nb", "x\"; reboot; echo \"", "init=$prefix/x"] {
            let reboots = reboots_over_boots(&strings(&[argument]), &[], 6);
            assert!(reboots <= 1, "shouldExist [{argument:?}]: {reboots} reboots in 6 boots");
        }
        assert_eq!(reboots_over_boots(&strings(&["nosmt"]), &strings(&["console=ttyS0"]), 6), 1);
    }

    #[test]
    fn arguments_that_decide_first_boot_are_refused() {
        for (should_exist, should_not_exist) in [
            (vec!["flatcar.first_boot=0"], vec![]),
            (vec!["coreos.first_boot=1"], vec![]),
            (vec!["ignition.firstboot"], vec![]),
            (vec![], vec!["ignition.firstboot"]),
            (vec![], vec!["\"flatcar.first_boot=detected\""]),
        ] {
            let error = decide(&strings(&should_exist), &strings(&should_not_exist), "", &KernelArgs::default()).unwrap_err().to_string();
            assert!(error.contains("would decide whether later boots are first boots"), "{should_exist:?} {should_not_exist:?}: {error}");
        }
    }

    #[test]
    fn a_huge_record_is_refused_without_reading_it() {
        let esp = std::env::temp_dir().join(format!("keel-kernel-args-huge-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&esp);
        std::fs::create_dir_all(esp.join("keel")).unwrap();
        std::fs::File::create(esp.join(RECORD)).unwrap().set_len(1 << 40).unwrap();
        let error = read_record(&esp).unwrap_err().to_string();
        assert!(error.contains("is larger than 65536 bytes"), "{error}");
        std::fs::remove_dir_all(&esp).unwrap();
    }

    #[test]
    fn the_flag_is_kept_for_the_boot_after_the_reboot() {
        let esp = std::env::temp_dir().join(format!("keel-kernel-args-flag-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&esp);
        std::fs::create_dir_all(&esp).unwrap();
        keep_first_boot_flag(&esp).unwrap();
        keep_first_boot_flag(&esp).unwrap();
        assert!(esp.join(FIRST_BOOT_FLAG).is_file());
        std::fs::remove_dir_all(&esp).unwrap();
    }

    #[test]
    fn the_record_and_snippet_are_written_whole_and_read_back() {
        let esp = std::env::temp_dir().join(format!("keel-kernel-args-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&esp);
        std::fs::create_dir_all(&esp).unwrap();
        assert_eq!(read_record(&esp).unwrap(), KernelArgs::default());
        let args = KernelArgs { add: strings(&["nosmt"]), remove: strings(&["quiet"]) };
        write_record(&esp, &args).unwrap();
        assert_eq!(read_record(&esp).unwrap(), args);
        assert!(std::fs::read_to_string(esp.join(GRUB_SNIPPET)).unwrap().contains("nosmt"));
        assert_eq!(std::fs::read_dir(esp.join("keel")).unwrap().count(), 2, "a temporary file was left behind");
        std::fs::remove_dir_all(&esp).unwrap();
    }
}
