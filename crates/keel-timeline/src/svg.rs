use crate::blame::span;
use crate::Timeline;
use keel_disk::printable;
use std::fmt::Write;

/// Left of the axis: each row's name and duration.
const LABEL_WIDTH: f64 = 230.0;
const AXIS_WIDTH: f64 = 760.0;
const RIGHT_MARGIN: f64 = 20.0;
/// Above the rows: the title and the tick labels.
const TOP: f64 = 58.0;
/// Below the rows: the axis caption and the legend.
const BOTTOM: f64 = 56.0;
const ROW_HEIGHT: f64 = 24.0;
const BAR_HEIGHT: f64 = 16.0;
/// About how wide one character of the 11px message text is, to cut a message to the room
/// beside its bar rather than let it run off the chart.
const MESSAGE_CHAR_WIDTH: f64 = 7.0;
const WANTED_TICKS: f64 = 8.0;

const STYLE: &str = "text{font-family:sans-serif;font-size:12px;fill:#222}\
.title{font-size:15px;font-weight:bold}.tick{font-size:11px;fill:#555}.grid{stroke:#ccc;stroke-width:1}\
.row{fill:#f3f3f3}.message{font-size:11px;fill:#555}.failed-message{font-size:11px;fill:#b00020}.failed-label{fill:#b00020;font-weight:bold}\
.bar{stroke-width:1}.kernel{fill:#9e9e9e;stroke:#616161}.done{fill:#4a7fc1;stroke:#2c5a94}\
.failed{fill:#d32f2f;stroke:#7f0000}";

/// The boot drawn for a browser: the kernel's time before /init and each stage as a bar on
/// one axis of seconds since the kernel started, one row each in the order they ran, a
/// failed stage in red with its error beside it. Every name and message is escaped: they
/// come from a file any root process could have written.
pub fn svg(timeline: &Timeline) -> String {
    let axis = Axis::for_span(timeline.written_s);
    let rows = timeline.stages.len() + 1;
    let height = TOP + rows as f64 * ROW_HEIGHT + BOTTOM;
    let width = LABEL_WIDTH + AXIS_WIDTH + RIGHT_MARGIN;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n\
         <style>{STYLE}</style>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let _ = writeln!(
        out,
        "<text class=\"title\" x=\"10\" y=\"22\">keel boot: kernel before /init {} + initrd {} = {}</text>",
        span(timeline.init_started_s),
        span(timeline.initrd_s()),
        span(timeline.written_s)
    );
    for row in (0..rows).step_by(2) {
        let _ = writeln!(out, "<rect class=\"row\" x=\"0\" y=\"{:.3}\" width=\"{width}\" height=\"{ROW_HEIGHT}\"/>", row_top(row));
    }
    axis.draw(&mut out, rows);
    let kernel = Bar { class: "kernel", name: "kernel before /init", started_s: 0.0, seconds: timeline.init_started_s, message: "" };
    kernel.draw(&mut out, &axis, 0);
    for (index, stage) in timeline.stages.iter().enumerate() {
        let bar = Bar {
            class: if stage.failed() { "failed" } else { "done" },
            name: &stage.name,
            started_s: stage.started_s,
            seconds: stage.duration_ms / 1000.0,
            message: stage.message(),
        };
        bar.draw(&mut out, &axis, index + 1);
    }
    draw_legend(&mut out, height - BOTTOM);
    out.push_str("</svg>\n");
    out
}

fn row_top(row: usize) -> f64 {
    TOP + row as f64 * ROW_HEIGHT
}

/// Seconds on the x axis: ticks at a round step (1, 2 or 5 times a power of ten), the axis
/// ending at the first tick at or after the end of the boot.
struct Axis {
    step_s: f64,
    ticks: u32,
    pixels_per_second: f64,
}

impl Axis {
    fn for_span(seconds: f64) -> Axis {
        // A timeline of no time at all still gets an axis of one millisecond.
        let seconds = seconds.max(0.001);
        let rough = seconds / WANTED_TICKS;
        let power = 10f64.powf(rough.log10().floor());
        let step_s = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * power).find(|step| *step >= rough).unwrap_or(10.0 * power);
        // Parsing bounds every time, so this is a small whole number.
        let ticks = (seconds / step_s).ceil().max(1.0) as u32;
        Axis { step_s, ticks, pixels_per_second: AXIS_WIDTH / (f64::from(ticks) * step_s) }
    }

    fn x(&self, seconds: f64) -> f64 {
        LABEL_WIDTH + seconds * self.pixels_per_second
    }

    fn draw(&self, out: &mut String, rows: usize) {
        let decimals = (-self.step_s.log10().floor()).max(0.0) as usize;
        let bottom = row_top(rows);
        for tick in 0..=self.ticks {
            let seconds = f64::from(tick) * self.step_s;
            let x = self.x(seconds);
            let _ = writeln!(out, "<line class=\"grid\" x1=\"{x:.3}\" y1=\"{:.3}\" x2=\"{x:.3}\" y2=\"{bottom:.3}\"/>", TOP - 4.0);
            let _ = writeln!(out, "<text class=\"tick\" x=\"{x:.3}\" y=\"{:.3}\" text-anchor=\"middle\">{seconds:.decimals$} s</text>", TOP - 8.0);
        }
    }
}

/// One row: a bar from `started_s` lasting `seconds`, its name and duration left of the
/// axis, and its message beside the bar on whichever side has more room.
struct Bar<'a> {
    class: &'static str,
    name: &'a str,
    started_s: f64,
    seconds: f64,
    message: &'a str,
}

impl Bar<'_> {
    fn draw(&self, out: &mut String, axis: &Axis, row: usize) {
        let top = row_top(row);
        let baseline = top + ROW_HEIGHT / 2.0 + 4.0;
        let (x, end) = (axis.x(self.started_s), axis.x(self.started_s + self.seconds));
        let duration = span(self.seconds);
        let failed = self.class == "failed";
        let label_class = if failed { " class=\"failed-label\"" } else { "" };
        let failed_word = if failed { " failed" } else { "" };
        let _ = writeln!(
            out,
            "<text{label_class} x=\"{:.3}\" y=\"{baseline:.3}\" text-anchor=\"end\">{} {duration}{failed_word}</text>",
            LABEL_WIDTH - 8.0,
            xml(self.name)
        );
        // The stroke keeps a stage of a fraction of a pixel visible; the rectangle itself
        // is exactly as wide as the stage was long.
        let _ = writeln!(
            out,
            "<rect class=\"bar {}\" x=\"{x:.3}\" y=\"{:.3}\" width=\"{:.3}\" height=\"{BAR_HEIGHT}\"><title>{}: {duration}{}</title></rect>",
            self.class,
            top + (ROW_HEIGHT - BAR_HEIGHT) / 2.0,
            end - x,
            xml(self.name),
            if self.message.is_empty() { String::new() } else { format!(" \u{2014} {}", xml(self.message)) }
        );
        if self.message.is_empty() {
            return;
        }
        let (room_after, room_before) = (axis.x(0.0) + AXIS_WIDTH + RIGHT_MARGIN - end, x - axis.x(0.0));
        let (anchor_x, anchor, room) =
            if room_after >= room_before { (end + 6.0, "start", room_after - 6.0) } else { (x - 6.0, "end", room_before - 6.0) };
        let message_class = if failed { "failed-message" } else { "message" };
        let _ = writeln!(
            out,
            "<text class=\"{message_class}\" x=\"{anchor_x:.3}\" y=\"{baseline:.3}\" text-anchor=\"{anchor}\">{}</text>",
            xml(&shortened(self.message, (room / MESSAGE_CHAR_WIDTH) as usize))
        );
    }
}

fn draw_legend(out: &mut String, top: f64) {
    let caption_y = top + 20.0;
    let _ = writeln!(
        out,
        "<text class=\"tick\" x=\"{:.3}\" y=\"{caption_y:.3}\" text-anchor=\"middle\">seconds since the kernel started \
         (its monotonic clock); hover over a bar for its whole message</text>",
        LABEL_WIDTH + AXIS_WIDTH / 2.0
    );
    let legend_y = top + 38.0;
    for (index, (class, meaning)) in [("kernel", "kernel before /init"), ("done", "keel-init stage"), ("failed", "failed stage")].iter().enumerate() {
        let x = LABEL_WIDTH + index as f64 * 170.0;
        let _ = writeln!(out, "<rect class=\"swatch {class}\" x=\"{x:.3}\" y=\"{:.3}\" width=\"14\" height=\"10\"/>", legend_y - 9.0);
        let _ = writeln!(out, "<text class=\"tick\" x=\"{:.3}\" y=\"{legend_y:.3}\">{meaning}</text>", x + 20.0);
    }
}

/// `text` as it is shown (control characters as their visible escapes, up to six times
/// longer) cut to `chars` characters, an ellipsis marking the cut. Cut before markup is
/// escaped, so no entity is split; `xml` leaves the visible escapes as they are.
fn shortened(text: &str, chars: usize) -> String {
    let shown = printable(text);
    if shown.chars().count() <= chars {
        return shown;
    }
    let mut cut: String = shown.chars().take(chars.saturating_sub(1)).collect();
    cut.push('\u{2026}');
    cut
}

/// `text` as XML character data or an attribute value: markup characters as entities,
/// control and invisible characters as visible `\u{..}` escapes (XML 1.0 forbids most
/// control characters even as references), and the two non-characters XML forbids too.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in printable(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\u{fffe}' | '\u{ffff}' => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::sample_timeline;
    use crate::Outcome;

    fn number(node: roxmltree::Node, attribute: &str) -> f64 {
        node.attribute(attribute).unwrap().parse().unwrap()
    }

    fn bars<'a>(document: &'a roxmltree::Document) -> Vec<roxmltree::Node<'a, 'a>> {
        document.descendants().filter(|n| n.has_tag_name("rect") && n.attribute("class").is_some_and(|c| c.starts_with("bar "))).collect()
    }

    #[test]
    fn one_bar_for_the_kernel_and_one_for_each_stage_in_the_order_they_ran() {
        let text = svg(&sample_timeline());
        let document = roxmltree::Document::parse(&text).unwrap();
        assert_eq!(document.root_element().tag_name().name(), "svg");
        let classes: Vec<&str> = bars(&document).iter().map(|bar| bar.attribute("class").unwrap()).collect();
        assert_eq!(classes, ["bar kernel", "bar done", "bar done", "bar failed"]);
        let titles: Vec<String> = bars(&document).iter().map(|bar| bar.first_element_child().unwrap().text().unwrap().to_string()).collect();
        assert_eq!(titles[0], "kernel before /init: 1.500s");
        assert_eq!(titles[2], "usr: 480ms \u{2014} verified");
        assert_eq!(titles[3], "first-boot: 1.250s \u{2014} no ROOT");
        let rows: Vec<f64> = bars(&document).iter().map(|bar| number(*bar, "y")).collect();
        assert!(rows.windows(2).all(|pair| pair[1] - pair[0] == ROW_HEIGHT), "{rows:?}");
    }

    #[test]
    fn bars_sit_on_the_axis_where_their_times_are() {
        let text = svg(&sample_timeline());
        let document = roxmltree::Document::parse(&text).unwrap();
        // 3.3 s at about 8 ticks is a step of 0.5 s: the axis ends at 3.5 s.
        let ticks: Vec<(f64, String)> = document
            .descendants()
            .filter(|n| {
                n.attribute("class") == Some("tick") && n.attribute("text-anchor") == Some("middle") && n.text().is_some_and(|t| t.ends_with(" s"))
            })
            .map(|n| (number(n, "x"), n.text().unwrap().to_string()))
            .collect();
        assert_eq!(ticks.len(), 8);
        assert_eq!(ticks.first().unwrap(), &(LABEL_WIDTH, "0.0 s".to_string()));
        assert_eq!(ticks.last().unwrap(), &(LABEL_WIDTH + AXIS_WIDTH, "3.5 s".to_string()));
        let per_second = AXIS_WIDTH / 3.5;
        let expected = [(0.0, 1.5), (1.501, 0.003), (1.51, 0.48), (2.0, 1.25)];
        for (bar, (start, seconds)) in bars(&document).iter().zip(expected) {
            assert!((number(*bar, "x") - (LABEL_WIDTH + start * per_second)).abs() < 0.001, "{bar:?}");
            assert!((number(*bar, "width") - seconds * per_second).abs() < 0.001, "{bar:?}");
        }
    }

    #[test]
    fn axis_steps_are_round_and_cover_the_boot() {
        for (seconds, step, ticks) in [(3.3, 0.5, 7), (0.0, 0.0002, 5), (12.4, 2.0, 7), (0.77, 0.1, 8), (1e9, 2e8, 5)] {
            let axis = Axis::for_span(seconds);
            assert!((axis.step_s - step).abs() < step * 1e-9 && axis.ticks == ticks, "{seconds}: {} x {}", axis.step_s, axis.ticks);
            assert!(f64::from(axis.ticks) * axis.step_s >= seconds);
        }
    }

    #[test]
    fn names_and_messages_cannot_inject_markup() {
        let mut timeline = sample_timeline();
        let hostile = "</text><script>alert(1)</script><text>& \"'\u{1}\u{ffff}";
        timeline.stages[0].name = hostile.chars().take(crate::MAX_STAGE_NAME_CHARS).collect();
        timeline.stages[1].outcome = Outcome::Done { detail: hostile.to_string() };
        timeline.stages[2].outcome = Outcome::Failed { error: hostile.to_string() };
        let text = svg(&timeline);
        let document = roxmltree::Document::parse(&text).unwrap();
        assert!(document.descendants().all(|n| !n.has_tag_name("script")));
        let shown = "</text><script>alert(1)</script><text>& \"'\\u{1}\\u{ffff}";
        let texts: Vec<&str> = document.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).collect();
        assert!(texts.iter().any(|t| *t == format!("{shown} 3.0ms")), "{texts:?}");
        assert_eq!(texts.iter().filter(|t| **t == shown).count(), 2, "{texts:?}");
    }

    #[test]
    fn a_failed_stage_is_drawn_apart_from_the_rest() {
        let text = svg(&sample_timeline());
        let document = roxmltree::Document::parse(&text).unwrap();
        let red = |class| document.descendants().filter(|n| n.attribute("class") == Some(class)).filter_map(|n| n.text()).collect::<Vec<_>>();
        assert_eq!(red("failed-label"), ["first-boot 1.250s failed"]);
        assert_eq!(red("failed-message"), ["no ROOT"]);
        let fill = |class: &str| {
            let rule = STYLE.split_once(&format!(".{class}{{fill:")).unwrap().1;
            rule.split_once(';').unwrap().0.to_string()
        };
        assert_ne!(fill("failed"), fill("done"));
        assert_ne!(fill("kernel"), fill("done"));
    }

    #[test]
    fn a_long_message_is_cut_to_the_room_beside_its_bar() {
        let mut timeline = sample_timeline();
        timeline.stages[0].outcome = Outcome::Done { detail: "é".repeat(500) };
        let text = svg(&timeline);
        let document = roxmltree::Document::parse(&text).unwrap();
        let message =
            document.descendants().find(|n| n.attribute("class") == Some("message") && n.text().is_some_and(|t| t.starts_with('é'))).unwrap();
        let shown = message.text().unwrap();
        assert!(shown.ends_with('\u{2026}') && shown.chars().count() < 500, "{shown}");
        // The bar ends at 1.504 s of 3.5: more room after it than before.
        let room = LABEL_WIDTH + AXIS_WIDTH + RIGHT_MARGIN - number(message, "x");
        assert!(shown.chars().count() as f64 * MESSAGE_CHAR_WIDTH <= room, "{room}");
        assert_eq!(message.attribute("text-anchor"), Some("start"));
    }

    #[test]
    fn a_message_of_control_characters_is_cut_as_it_is_shown() {
        let mut timeline = sample_timeline();
        // Each ESC is shown as a six-character escape: cut before that, 100 of them would
        // overflow the chart.
        timeline.stages[0].outcome = Outcome::Done { detail: "\u{1b}".repeat(100) };
        let document_text = svg(&timeline);
        let document = roxmltree::Document::parse(&document_text).unwrap();
        let message =
            document.descendants().find(|n| n.attribute("class") == Some("message") && n.text().is_some_and(|t| t.starts_with('\\'))).unwrap();
        let room = LABEL_WIDTH + AXIS_WIDTH + RIGHT_MARGIN - number(message, "x");
        let shown = message.text().unwrap();
        assert!(shown.ends_with('\u{2026}') && shown.chars().count() as f64 * MESSAGE_CHAR_WIDTH <= room, "{room}: {shown}");
    }
}
