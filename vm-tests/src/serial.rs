//! The serial console as QEMU writes it: bytes, not lines of UTF-8. Firmware draws its
//! menus with escape sequences and code page 437 box characters and may redraw one line
//! for seconds without ending it (systemd-boot's countdown), so a reader of whole UTF-8
//! lines would either stop at the first byte that is not UTF-8 or never see that line.

use std::time::Duration;

/// The console so far: every ended line with when its end arrived, then the line still
/// being written, so that what a watcher looks for is there as soon as it is printed.
#[derive(Debug, Default)]
pub(crate) struct SerialText {
    text: String,
    arrivals: Vec<Duration>,
    /// How much of `text` is ended lines; the rest is `unended` as text.
    ended_len: usize,
    unended: Vec<u8>,
    last_arrival: Duration,
}

impl SerialText {
    /// Adds what QEMU wrote at `arrival` (from its start).
    pub(crate) fn push(&mut self, arrival: Duration, bytes: &[u8]) {
        self.text.truncate(self.ended_len);
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&byte| byte == b'\n') {
            let (line, after) = rest.split_at(end);
            self.unended.extend_from_slice(line);
            self.end_line(arrival);
            rest = after.get(1..).unwrap_or_default();
        }
        self.unended.extend_from_slice(rest);
        self.last_arrival = arrival;
        self.text.push_str(&String::from_utf8_lossy(&self.unended));
    }

    fn end_line(&mut self, arrival: Duration) {
        self.text.truncate(self.ended_len);
        self.text.push_str(String::from_utf8_lossy(&self.unended).trim_end_matches('\r'));
        self.text.push('\n');
        self.ended_len = self.text.len();
        self.arrivals.push(arrival);
        self.unended.clear();
    }

    /// Everything printed so far, the unended line included.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The whole console as lines, each with its arrival: a line QEMU's end left unended
    /// counts as ended when its last byte came.
    pub(crate) fn finish(mut self) -> (String, Vec<Duration>) {
        if !self.unended.is_empty() {
            self.end_line(self.last_arrival);
        }
        (self.text, self.arrivals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_line_split_across_writes_arrives_when_its_end_does() {
        let mut serial = SerialText::default();
        serial.push(MS, b"Run /in");
        serial.push(2 * MS, b"it as init process\r\nnext");
        let (text, arrivals) = serial.finish();
        assert_eq!(text, "Run /init as init process\nnext\n");
        assert_eq!(arrivals, vec![2 * MS, 2 * MS]);
    }

    #[test]
    fn an_unended_line_can_be_seen_before_it_ends() {
        let mut serial = SerialText::default();
        serial.push(MS, b"BdsDxe: starting Boot0002\r\n\x1b[2J  Reboot Into Firmware Interface   Boot in 10 s.");
        assert!(serial.text().contains("Reboot Into Firmware Interface"), "{}", serial.text());
        serial.push(2 * MS, b" Boot in 9 s.");
        assert!(serial.text().ends_with("Boot in 10 s. Boot in 9 s."), "{}", serial.text());
        assert_eq!(serial.text().matches("Reboot Into").count(), 1, "the unended line was repeated: {}", serial.text());
    }

    #[test]
    fn bytes_that_are_not_utf8_do_not_hide_what_follows() {
        let mut serial = SerialText::default();
        // Code page 437's horizontal line, as systemd-boot draws its menu's frame.
        serial.push(MS, b"\xc4\xc4\xc4\xc4\n");
        serial.push(2 * MS, b"EFI stub: UEFI Secure Boot is enabled.\r\n");
        let (text, arrivals) = serial.finish();
        assert_eq!(text.lines().nth(1), Some("EFI stub: UEFI Secure Boot is enabled."));
        assert_eq!(arrivals, vec![MS, 2 * MS]);
    }

    #[test]
    fn an_unended_last_line_is_kept_with_its_last_arrival() {
        let mut serial = SerialText::default();
        serial.push(MS, b"first\nBoot in");
        serial.push(3 * MS, b" 1 s.");
        let (text, arrivals) = serial.finish();
        assert_eq!(text, "first\nBoot in 1 s.\n");
        assert_eq!(arrivals, vec![MS, 3 * MS]);
    }
}
