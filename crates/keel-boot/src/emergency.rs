use crate::log::Log;
use crate::stage::Stage;
use keel_cmdline::EmergencyAction;
use nix::sys::reboot::{reboot, RebootMode};
use std::path::Path;
use std::time::Duration;

/// How long a failure report stays on screen before an automatic reboot, so a person can
/// read it and a failing machine does not reboot in a tight loop.
const PAUSE_BEFORE_REBOOT: Duration = Duration::from_secs(10);
const SHELL: &str = "/bin/sh";

/// Why the boot did not reach the real root.
pub enum Failure {
    Failed {
        stage: &'static Stage,
        error: anyhow::Error,
    },
    /// `rd.break` asked to stop before this stage.
    Stopped {
        stage: &'static Stage,
    },
}

/// Reports the failure, opens a shell when asked and one exists, then carries out the
/// emergency action. Never returns: PID 1 must not exit.
pub fn handle(log: &mut Log, failure: &Failure, action: EmergencyAction, shell: bool) -> ! {
    match failure {
        Failure::Failed { stage, error } => {
            log.error("==================== BOOT FAILED ====================");
            log.error(&format!("stage: {} ({})", stage.name, stage.doing));
            // A message may span lines (a config's reports, one per line): each is a line of
            // its own, so none reaches the console as an escaped newline.
            let mut log_message = |label: &str, message: String| {
                let mut lines = message.lines();
                log.error(&format!("{label}{}", lines.next().unwrap_or_default()));
                lines.for_each(|line| log.error(&format!("{:width$}{line}", "", width = label.len())));
            };
            log_message("error: ", error.to_string());
            for cause in error.chain().skip(1) {
                log_message("  because: ", cause.to_string());
            }
            log.error(&format!("what to do: {}", stage.remedy));
        }
        Failure::Stopped { stage } => {
            log.error(&format!("==================== BOOT STOPPED before stage {} (rd.break) ====================", stage.name));
        }
    }
    log.error("The real root was not started.");
    if shell {
        if Path::new(SHELL).exists() {
            log.error("rd.shell: starting a shell; leave it to continue with the emergency action.");
            let _ = crate::environment::command(SHELL).status();
        } else {
            log.error("rd.shell: this initrd has no shell.");
        }
    }
    let (mode, word) = match action {
        EmergencyAction::Reboot => (RebootMode::RB_AUTOBOOT, "rebooting"),
        EmergencyAction::Poweroff => (RebootMode::RB_POWER_OFF, "powering off"),
        EmergencyAction::Halt => (RebootMode::RB_HALT_SYSTEM, "halting"),
    };
    if action == EmergencyAction::Reboot {
        log.error(&format!("{word} in {} s (rd.emergency=reboot|poweroff|halt)", PAUSE_BEFORE_REBOOT.as_secs()));
        std::thread::sleep(PAUSE_BEFORE_REBOOT);
    } else {
        log.error(&format!("{word} (rd.emergency)"));
    }
    act(mode)
}

/// Reboots now: what first boot does when the boot loader must apply new kernel arguments.
pub fn reboot_now() -> ! {
    act(RebootMode::RB_AUTOBOOT)
}

fn act(mode: RebootMode) -> ! {
    nix::unistd::sync();
    loop {
        // reboot() only returns on failure; there is nothing left to do but try again.
        let _ = reboot(mode);
        std::thread::sleep(Duration::from_secs(5));
    }
}
