use keel_disk::printable;
use nix::time::{clock_gettime, ClockId};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::Duration;

/// Seconds since boot on the clock the kernel's log timestamps use, so keel's lines and
/// the kernel's can be read as one timeline.
pub fn uptime() -> Duration {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map(Duration::from).unwrap_or_default()
}

/// Writes every line to the console (for the person watching) and to /dev/kmsg (for
/// dmesg and the journal later). Logging never fails the boot: a line that cannot be
/// written is lost, not fatal.
pub struct Log {
    kmsg: Option<File>,
}

impl Log {
    pub fn new() -> Log {
        Log { kmsg: None }
    }

    /// Called once /dev exists.
    pub fn open_kmsg(&mut self) {
        self.kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    }

    pub fn info(&mut self, line: &str) {
        self.write(6, line);
    }

    pub fn error(&mut self, line: &str) {
        self.write(3, line);
    }

    fn write(&mut self, priority: u8, line: &str) {
        // Lines carry partition names, labels and error text read from disks: escaped, so
        // a disk cannot send terminal escapes to the console or forge kmsg records.
        let line = &printable(line);
        let now = uptime();
        let mut console = std::io::stdout().lock();
        let _ = writeln!(console, "keel: [{:4}.{:03}] {line}", now.as_secs(), now.subsec_millis());
        let _ = console.flush();
        if let Some(kmsg) = &mut self.kmsg {
            // One write per record: kmsg takes each write as one message.
            let _ = kmsg.write_all(format!("<{priority}>keel: {line}\n").as_bytes());
        }
    }
}
