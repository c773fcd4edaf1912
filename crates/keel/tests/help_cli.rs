//! Every `keel` command's help and usage errors: `keel CMD --help` and `keel help CMD` print
//! the command's options, a usage error exits 1 (2 would say the data is corrupt) with the
//! command's usage, and a missing or unknown command lists the commands there are.

mod support;

use support::{failure_of, keel, stdout_of};

/// Each command and what its help must name: its positional words and every option, as the
/// usage text before per-command help listed them.
const COMMANDS: [(&str, &[&str]); 20] = [
    (
        "verity format",
        &[
            "<DATA>",
            "<HASH>",
            "--hash <sha256|sha512|sha1>",
            "--data-block-size <N>",
            "--hash-block-size <N>",
            "--salt <HEX|->",
            "--uuid <UUID>",
            "--format <1|0>",
            "--no-superblock",
            "--hash-offset <BYTES>",
            "--data-blocks <N>",
            "--json",
        ],
    ),
    ("verity verify", &["<DATA>", "<HASH>", "<ROOT_HASH>", "--hash-offset <BYTES>", "--no-superblock", "--data-blocks <N>", "--salt <HEX|->"]),
    ("verity dump", &["<HASH>", "--hash-offset <BYTES>"]),
    (
        "verity table",
        &[
            "<DATA>",
            "<HASH>",
            "<ROOT_HASH>",
            "--hash-offset <BYTES>",
            "--restart-on-corruption",
            "--panic-on-corruption",
            "--ignore-zero-blocks",
            "--check-at-most-once",
            "--no-superblock",
            "--data-blocks <N>",
        ],
    ),
    (
        "image build",
        &[
            "--usr <DIR>",
            "--output <IMAGE>",
            "--manifest <FILE>",
            "--os <NAME>",
            "--usr-mib <N>",
            "--root-mib <N>",
            "--esp-mib <N>",
            "--oem-mib <N>",
            "--disk-guid <GUID>",
            "--epoch <SECONDS>",
            "--sector-size <512|4096>",
            "--verity-hash <sha256|sha512|sha1>",
            "--verity-format <1|0>",
            "--verity-data-block-size <N>",
            "--verity-hash-block-size <N>",
            "--oem <DIR>",
            "--usr-b <DIR>",
            "--uki-kernel <VMLINUZ>",
            "--uki-init <KEEL_INIT>",
            "--uki-kernel-modules </lib/modules/VERSION>",
            "--uki-cmdline <TEXT>",
            "--uki-os-release <FILE>",
            "--uki-stub <FILE>",
            "--sign-key <KEY>",
            "--sign-cert <CERT>",
            "--compression <lz4|zstd|xz|gzip|none>",
            "--drivers <default|host|MODULE,...>",
        ],
    ),
    (
        "initrd build",
        &[
            "--manifest <FILE>",
            "--init <KEEL_INIT>",
            "--kernel-modules </lib/modules/VERSION>",
            "--output <FILE>",
            "--compression <lz4|zstd|xz|gzip|none>",
            "--root-filesystems <ext4,xfs,btrfs>",
            "--mkfs <ext4,xfs,btrfs,vfat,swap>",
            "--ignition-base <DIR>",
            "--drivers <default|host|MODULE,...>",
        ],
    ),
    (
        "uki build",
        &[
            "--kernel <VMLINUZ>",
            "--initrd <FILE>",
            "--cmdline <TEXT>",
            "--os-release <FILE>",
            "--uname <RELEASE>",
            "--stub <FILE>",
            "--output <FILE>",
            "--sign-key <KEY>",
            "--sign-cert <CERT>",
        ],
    ),
    ("uki inspect", &["<UKI>"]),
    ("ignition validate", &["<CONFIG>"]),
    ("ignition render", &["<CONFIG>", "--base <CONFIG>"]),
    ("ignition apply", &["<CONFIG>", "--root <DIR>", "--base <CONFIG>", "--dry-run"]),
    ("dm status", &["<NAME>"]),
    ("disk grow-root", &["<DISK>", "--sector-size <512|4096>"]),
    ("disk randomize-guids", &["<DISK>", "--image-default <GUID>", "--sector-size <512|4096>"]),
    ("disk find", &["<SPEC>", "--image-bytes <N>"]),
    ("usr show", &["<DISK>", "--json", "--sector-size <512|4096>"]),
    ("usr set", &["<DISK>", "<SLOT>", "--priority <0-15>", "--tries <0-15>", "--successful <0|1>", "--sector-size <512|4096>"]),
    ("usr prioritize", &["<DISK>", "<SLOT>", "--max <1-15>", "--sector-size <512|4096>"]),
    ("usr mark-successful", &["<DISK>", "<SLOT>", "--sector-size <512|4096>"]),
    ("boot analyze", &["[TIMELINE]", "--svg <FILE>"]),
];

fn words(command: &str) -> Vec<&str> {
    command.split(' ').collect()
}

/// The names a help text lists under "Commands:", `help` left out.
fn listed_commands(help: &str) -> Vec<String> {
    let listing = help.split("Commands:\n").nth(1).unwrap_or_else(|| panic!("no command list in {help}"));
    // A name starts its line after two spaces; a wrapped summary continues further in.
    listing
        .lines()
        .take_while(|line| line.starts_with("  "))
        .filter(|line| !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_has_a_row_here() {
    let mut commands = Vec::new();
    for group in listed_commands(&stdout_of(keel(&["--help"]))) {
        for action in listed_commands(&stdout_of(keel(&[&group, "--help"]))) {
            commands.push(format!("{group} {action}"));
        }
    }
    let rows: Vec<String> = COMMANDS.iter().map(|(command, _)| command.to_string()).collect();
    assert_eq!(commands, rows);
}

#[test]
fn each_commands_help_names_every_option_and_keel_help_prints_the_same() {
    for (command, mentions) in COMMANDS {
        let help = stdout_of(keel(&[&words(command)[..], &["--help"]].concat()));
        assert!(help.contains(&format!("Usage: keel {command} ")), "{command}: {help}");
        for mention in mentions {
            assert!(help.contains(mention), "{command}: {mention} is not in\n{help}");
        }
        assert_eq!(stdout_of(keel(&[&["help"][..], &words(command)].concat())), help, "keel help {command}");
    }
}

#[test]
fn a_usage_error_exits_1_with_the_commands_usage() {
    for (command, _) in COMMANDS {
        let error = failure_of(keel(&[&words(command)[..], &["--no-such-option"]].concat()));
        assert!(error.contains("unexpected argument '--no-such-option'"), "{command}: {error}");
        assert!(error.contains(&format!("Usage: keel {command} ")), "{command}: {error}");
    }
    // A value the option's parser refuses: clap leaves the usage out of this one by itself.
    let error = failure_of(keel(&["usr", "show", "disk.img", "--sector-size", "1024"]));
    assert!(error.contains("'1024' for '--sector-size <512|4096>'") && error.contains("512 and 4096"), "{error}");
    assert!(error.contains("Usage: keel usr show "), "{error}");
    // A word that is not UTF-8 beside a usage error: still the error, not a panic.
    use std::os::unix::ffi::OsStrExt;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["usr", "show"])
        .arg(std::ffi::OsStr::from_bytes(b"\xff"))
        .arg("--no-such-option")
        .output()
        .unwrap();
    let error = failure_of(output);
    assert!(error.contains("Usage: keel usr show "), "{error}");
}

#[test]
fn a_missing_or_unknown_command_lists_the_commands() {
    let groups = ["verity", "image", "initrd", "ignition", "dm", "disk", "usr"];
    for (arguments, heading) in [(&[][..], "error: 'keel' needs a command"), (&["bogus"][..], "error: unrecognized subcommand 'bogus'")] {
        let error = failure_of(keel(arguments));
        assert!(error.starts_with(heading), "{arguments:?}: {error}");
        for group in groups {
            assert!(error.contains(&format!("\n  {group} ")), "{arguments:?}: {group} is not listed in\n{error}");
        }
    }
    let error = failure_of(keel(&["usr", "mark-sucessful", "disk.img", "A"]));
    assert!(error.contains("tip: a similar subcommand exists: 'mark-successful'"), "{error}");
    assert!(error.contains("commands of keel usr:\n") && error.contains("\n  prioritize "), "{error}");
    let error = failure_of(keel(&["verity"]));
    assert!(error.starts_with("error: 'keel verity' needs a command") && error.contains("\n  format "), "{error}");
}

#[test]
fn help_and_version_exit_0() {
    assert!(stdout_of(keel(&["--help"])).contains("exit status: 0 done, 1 bad arguments or failure, 2 verification failed"));
    assert!(stdout_of(keel(&["help"])).contains("Usage: keel <COMMAND>"));
    assert!(stdout_of(keel(&["--version"])).starts_with("keel "));
}

#[test]
fn an_option_given_twice_is_refused() {
    let error = failure_of(keel(&["usr", "show", "disk.img", "--sector-size", "512", "--sector-size=4096"]));
    assert!(error.contains("'--sector-size <512|4096>' cannot be used multiple times"), "{error}");
}
