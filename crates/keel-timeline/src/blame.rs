use crate::{Stage, Timeline};
use keel_disk::printable;

/// As `systemd-analyze blame`: a line with the kernel's time before /init, keel-init's time
/// and their sum, then one line a stage, the longest first (stages that took as long stay
/// in the order they ran). Names and messages come from a file in /run, so they are escaped
/// before they reach a terminal.
pub fn blame(timeline: &Timeline) -> String {
    let mut text = format!(
        "kernel before /init {} + initrd {} = {} to the switch to the real root\n",
        span(timeline.init_started_s),
        span(timeline.initrd_s()),
        span(timeline.written_s)
    );
    let mut longest_first: Vec<&Stage> = timeline.stages.iter().collect();
    longest_first.sort_by(|a, b| b.duration_ms.total_cmp(&a.duration_ms));
    let names: Vec<String> = longest_first.iter().map(|stage| printable(&stage.name)).collect();
    let name_width = names.iter().map(|name| name.chars().count()).max().unwrap_or(0);
    for (stage, name) in longest_first.iter().zip(&names) {
        let message = printable(stage.message());
        let message = if stage.failed() { format!("FAILED: {message}") } else { message };
        let line = format!("{:>9} {name:<name_width$}  {message}", span(stage.duration_ms / 1000.0));
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `seconds` as systemd-analyze writes a time span: seconds from one second up,
/// milliseconds below, with a tenth where whole milliseconds would say 0 or 1.
pub(crate) fn span(seconds: f64) -> String {
    let millis = seconds * 1000.0;
    if millis >= 1000.0 {
        format!("{seconds:.3}s")
    } else if millis >= 10.0 {
        format!("{millis:.0}ms")
    } else {
        format!("{millis:.1}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample_timeline;

    #[test]
    fn spans_read_as_systemd_writes_them() {
        assert_eq!(span(3.3), "3.300s");
        assert_eq!(span(1.0), "1.000s");
        assert_eq!(span(0.48), "480ms");
        assert_eq!(span(0.003), "3.0ms");
        assert_eq!(span(0.00004), "0.0ms");
    }

    #[test]
    fn blame_puts_the_longest_stage_first_under_the_totals() {
        assert_eq!(
            blame(&sample_timeline()),
            "kernel before /init 1.500s + initrd 1.800s = 3.300s to the switch to the real root\n\
             \x20  1.250s first-boot  FAILED: no ROOT\n\
             \x20   480ms usr         verified\n\
             \x20   3.0ms mounts      proc sys dev run\n"
        );
    }

    #[test]
    fn stages_that_took_as_long_keep_the_order_they_ran_in() {
        let mut timeline = sample_timeline();
        for stage in &mut timeline.stages {
            stage.duration_ms = 1.0;
        }
        let text = blame(&timeline);
        let order: Vec<&str> = text.lines().skip(1).map(|line| line.split_whitespace().nth(1).unwrap()).collect();
        assert_eq!(order, ["mounts", "usr", "first-boot"]);
    }

    #[test]
    fn blame_cannot_send_escapes_to_the_terminal() {
        let mut timeline = sample_timeline();
        timeline.stages[0].name = "mou\x1b[2Jnts".to_string();
        timeline.stages[1].outcome = crate::Outcome::Done { detail: "line\nkeel: forged".to_string() };
        let text = blame(&timeline);
        assert!(!text.contains('\x1b') && text.lines().count() == 4, "{text}");
        assert!(text.contains(r"mou\u{1b}[2Jnts") && text.contains(r"line\u{a}keel: forged"), "{text}");
    }
}
