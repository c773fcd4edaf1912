//! `keel`: one command line for image builders and operators. Each subcommand's options are
//! declared next to the code that runs it (clap derive), so `--help` and the parser are the
//! same text; the handler calls the crate that does the work.

mod boot;
mod build;
mod disk;
mod dm;
mod ignition;
mod sbom;
mod uki;
mod usr;
mod verity;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, Parser, Subcommand};
use keel_verity::VerityError;

/// veritysetup's (cryptsetup's) convention: 2 means the data did not verify.
const EXIT_CORRUPT: i32 = 2;
/// Bad arguments or any other failure. clap's own usage errors exit 2 by default, which
/// here would claim the data is corrupt: they are mapped to this.
const EXIT_FAILURE: i32 = 1;

/// keel's tools for image builders and operators: verity hash trees, images and initrds,
/// Ignition configs, the /usr slots and the disk's first-boot rewrites.
#[derive(Parser)]
#[command(name = "keel", version)]
#[command(after_help = "exit status: 0 done, 1 bad arguments or failure, 2 verification failed (data or hash tree corrupt)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// dm-verity hash trees in veritysetup's format, with its option names and output
    #[command(subcommand)]
    Verity(verity::VerityCommand),
    /// build a disk image
    #[command(subcommand)]
    Image(build::ImageCommand),
    /// build an initrd for an image
    #[command(subcommand)]
    Initrd(build::InitrdCommand),
    /// unified kernel images for Secure Boot: build (and sign), inspect
    #[command(subcommand)]
    Uki(uki::UkiCommand),
    /// Ignition configs, offline: validate, render, apply
    #[command(subcommand)]
    Ignition(ignition::IgnitionCommand),
    /// device-mapper devices
    #[command(subcommand)]
    Dm(dm::DmCommand),
    /// first boot's rewrites of a disk's partition table, and keel-init's look at the devices
    #[command(subcommand)]
    Disk(disk::DiskCommand),
    /// the A/B /usr slots' gptprio bits, which the bootloader reads to pick the slot it boots
    #[command(subcommand)]
    Usr(usr::UsrCommand),
    /// what a boot spent its time on, from the timeline keel-init leaves the real root
    #[command(subcommand)]
    Boot(boot::BootCommand),
}

impl Command {
    /// `arguments`: the command line after `keel`, which the builders' provenance records.
    fn run(self, arguments: &[std::ffi::OsString]) -> anyhow::Result<()> {
        match self {
            Command::Verity(command) => command.run(),
            Command::Image(command) => command.run(arguments),
            Command::Initrd(command) => command.run(arguments),
            Command::Uki(command) => command.run(),
            Command::Ignition(command) => command.run(),
            Command::Dm(command) => command.run(),
            Command::Disk(command) => command.run(),
            Command::Usr(command) => command.run(),
            Command::Boot(command) => command.run(),
        }
    }
}

/// Writes to stdout; a reader that went away (`| head`) ends the output, not the command with a
/// panic, as println! would.
pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => Err(error).context("cannot write to stdout"),
        _ => Ok(()),
    }
}

fn main() {
    let arguments: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = Cli::try_parse_from(&arguments).unwrap_or_else(|error| exit_on_parse_error(error));
    if let Err(error) = cli.command.run(arguments.get(1..).unwrap_or_default()) {
        eprintln!("keel: {error:#}");
        let corrupt = error.chain().any(|cause| matches!(cause.downcast_ref(), Some(VerityError::Corrupt(_))));
        std::process::exit(if corrupt { EXIT_CORRUPT } else { EXIT_FAILURE });
    }
}

/// Prints what clap made of the command line and exits: 0 for `--help` and `--version`
/// (printed to stdout), 1 for a usage error. A command with no subcommand named, or an
/// unknown one, is an error that lists the commands there are, with what each does.
fn exit_on_parse_error(mut error: clap::Error) -> ! {
    if !error.use_stderr() {
        // Nothing useful is left to do when stdout is gone.
        let _ = error.print();
        std::process::exit(0);
    }
    // Only to find the command whose usage to show: a word that is not UTF-8 cannot name one.
    let words: Vec<String> = std::env::args_os().skip(1).map(|word| word.to_string_lossy().into_owned()).collect();
    let mut command = deepest_command(&words);
    // clap leaves the usage out of some errors (a value its parser refused): every usage error shows it.
    if error.get(ContextKind::Usage).is_none() {
        error.insert(ContextKind::Usage, ContextValue::StyledStr(command.render_usage()));
    }
    let name = command.get_bin_name().unwrap_or(command.get_name());
    match error.kind() {
        // clap's text for this kind is the command's help, which lists the commands.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => eprint!("error: '{name}' needs a command\n\n{}", error.render()),
        ErrorKind::InvalidSubcommand => eprint!("{}\n{}", error.render(), command_list(&command)),
        _ => eprint!("{}", error.render()),
    }
    std::process::exit(EXIT_FAILURE)
}

/// The deepest command `words` name: `keel usr` for `keel usr bogus`.
fn deepest_command(words: &[String]) -> clap::Command {
    let mut command = Cli::command();
    // Gives every subcommand its full name (`keel usr`).
    command.build();
    for word in words {
        match command.find_subcommand(word) {
            Some(subcommand) => command = subcommand.clone(),
            None => break,
        }
    }
    command
}

/// `command`'s subcommands, one a line with its summary.
fn command_list(command: &clap::Command) -> String {
    let subcommands: Vec<&clap::Command> = command.get_subcommands().filter(|subcommand| subcommand.get_name() != "help").collect();
    let width = subcommands.iter().map(|subcommand| subcommand.get_name().len()).max().unwrap_or(0);
    let mut list = format!("commands of {}:\n", command.get_bin_name().unwrap_or(command.get_name()));
    for subcommand in subcommands {
        let about = subcommand.get_about().map(ToString::to_string).unwrap_or_default();
        list.push_str(&format!("  {:width$}  {about}\n", subcommand.get_name()));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_option_says_what_it_is() {
        fn check(command: &clap::Command) {
            for argument in command.get_arguments() {
                assert!(argument.get_help().is_some(), "{} {} has no help text", command.get_name(), argument.get_id());
            }
            for subcommand in command.get_subcommands() {
                assert!(subcommand.get_about().is_some(), "{} {} has no summary", command.get_name(), subcommand.get_name());
                check(subcommand);
            }
        }
        check(&Cli::command());
    }

    #[test]
    fn the_command_list_is_of_the_deepest_command_named() {
        let list = |text: &str| command_list(&deepest_command(&text.split_whitespace().map(str::to_string).collect::<Vec<_>>()));
        let top = list("bogus --json");
        assert!(top.starts_with("commands of keel:\n") && top.contains("\n  verity    dm-verity hash trees"), "{top}");
        assert!(!top.contains("help"), "{top}");
        let usr = list("usr bogus show");
        assert!(usr.starts_with("commands of keel usr:\n") && usr.contains("\n  mark-successful  ") && !usr.contains("verity"), "{usr}");
    }
}
