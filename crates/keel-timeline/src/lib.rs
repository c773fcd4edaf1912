//! The boot timeline: what keel-init did when, on the kernel's monotonic clock. keel-init
//! writes it to [`PATH`] just before it switches to the real root, which inherits it;
//! `keel boot analyze` reads it back there, as text that anyone who could write to /run
//! may have shaped, and prints or draws it.

mod blame;
mod svg;

pub use blame::blame;
pub use svg::svg;

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// Where keel-init leaves the timeline for the real root.
pub const PATH: &str = "/run/keel/timeline.json";

/// keel-init writes well under 10 KiB; a file this large is not one of its timelines.
pub const MAX_BYTES: u64 = 1 << 20;
/// keel-init has fewer than 20 stages; a chart of more rows than this is not a boot.
pub const MAX_STAGES: usize = 256;
/// Stage names are keel's own short words.
pub const MAX_STAGE_NAME_CHARS: usize = 64;
/// Uptime of more than about 31 years is no clock reading: it is a damaged or forged file,
/// and a bound keeps every figure drawn from it finite.
const MAX_SECONDS: f64 = 1e9;
/// Every time is written as an f64 computed from exact clock readings; this absorbs the
/// rounding of adding two of them, and nothing more.
const ROUNDING_SECONDS: f64 = 1e-6;

/// One stage of the boot, as keel-init logged it.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub name: String,
    /// Uptime when the stage began.
    pub started_s: f64,
    pub duration_ms: f64,
    pub outcome: Outcome,
}

impl Stage {
    pub fn ended_s(&self) -> f64 {
        self.started_s + self.duration_ms / 1000.0
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed { .. })
    }

    /// What the stage reported: its detail, or its error.
    pub fn message(&self) -> &str {
        match &self.outcome {
            Outcome::Done { detail } => detail,
            Outcome::Failed { error } => error,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Done { detail: String },
    Failed { error: String },
}

/// The writer keel-init keeps while it boots. It takes every time from its caller, who owns
/// the clock, so the same calls always write the same file.
pub struct Recorder {
    init_started: Duration,
    stages: Vec<Stage>,
}

impl Recorder {
    /// `init_started`: uptime when keel-init began, which is also how long the kernel took
    /// before it ran /init.
    pub fn new(init_started: Duration) -> Recorder {
        Recorder { init_started, stages: Vec::new() }
    }

    pub fn record(&mut self, stage: &str, started: Duration, took: Duration, outcome: Result<&str, String>) {
        self.stages.push(Stage {
            name: stage.to_string(),
            started_s: started.as_secs_f64(),
            duration_ms: took.as_secs_f64() * 1000.0,
            outcome: match outcome {
                Ok(detail) => Outcome::Done { detail: detail.to_string() },
                Err(error) => Outcome::Failed { error },
            },
        });
    }

    /// The file's text, written at uptime `now`.
    pub fn to_json(&self, now: Duration) -> String {
        let stages: Vec<Value> = self.stages.iter().map(stage_json).collect();
        format!(
            "{:#}\n",
            json!({
                "init_started_s": self.init_started.as_secs_f64(),
                "written_s": now.as_secs_f64(),
                "initrd_ms": now.saturating_sub(self.init_started).as_secs_f64() * 1000.0,
                "stages": stages,
            })
        )
    }
}

fn stage_json(stage: &Stage) -> Value {
    let (key, message) = match &stage.outcome {
        Outcome::Done { detail } => ("detail", detail),
        Outcome::Failed { error } => ("error", error),
    };
    let mut entry = Map::new();
    entry.insert("stage".into(), json!(stage.name));
    entry.insert("started_s".into(), json!(stage.started_s));
    entry.insert("duration_ms".into(), json!(stage.duration_ms));
    entry.insert("ok".into(), json!(!stage.failed()));
    entry.insert(key.into(), json!(message));
    Value::Object(entry)
}

/// A timeline read back: every time checked to be a clock reading that fits the others.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeline {
    /// Uptime when keel-init began: the kernel's time before /init.
    pub init_started_s: f64,
    /// Uptime when keel-init wrote the file, just before it switched to the real root.
    pub written_s: f64,
    /// The stages in the order they ran.
    pub stages: Vec<Stage>,
}

impl Timeline {
    /// Reads the timeline at `path`, refusing a file larger than [`MAX_BYTES`] before
    /// reading all of it.
    pub fn read(path: &Path) -> anyhow::Result<Timeline> {
        // Non-blocking, so a FIFO given as the timeline is refused instead of waited on.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        if !file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.is_file() {
            bail!("{} is not a regular file", path.display());
        }
        let mut bytes = Vec::new();
        file.take(MAX_BYTES + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {}", path.display()))?;
        if bytes.len() as u64 > MAX_BYTES {
            bail!("{} is larger than {MAX_BYTES} bytes, which no keel-init timeline is", path.display());
        }
        let text = String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))?;
        Timeline::parse(&text).with_context(|| format!("{} is not a keel-init timeline", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Timeline> {
        if text.len() as u64 > MAX_BYTES {
            bail!("the text is larger than {MAX_BYTES} bytes, which no keel-init timeline is");
        }
        let value: Value = serde_json::from_str(text).context("not JSON")?;
        let top = value.as_object().context("not a JSON object")?;
        let init_started_s = seconds(top, "init_started_s")?;
        let written_s = seconds(top, "written_s")?;
        let initrd_ms = milliseconds(top, "initrd_ms")?;
        if written_s < init_started_s {
            bail!("written_s {written_s} is before init_started_s {init_started_s}");
        }
        if (initrd_ms / 1000.0 - (written_s - init_started_s)).abs() > ROUNDING_SECONDS {
            bail!("initrd_ms {initrd_ms} is not the time from init_started_s {init_started_s} to written_s {written_s}");
        }
        let stages = top.get("stages").context("`stages` is missing")?.as_array().context("`stages` is not an array")?;
        if stages.len() > MAX_STAGES {
            bail!("`stages` has {} entries; keel-init never has more than {MAX_STAGES}", stages.len());
        }
        let stages = stages
            .iter()
            .enumerate()
            .map(|(index, stage)| parse_stage(stage, init_started_s, written_s).with_context(|| format!("stages[{index}]")))
            .collect::<anyhow::Result<Vec<Stage>>>()?;
        Ok(Timeline { init_started_s, written_s, stages })
    }

    /// keel-init's own time: from /init to the switch to the real root.
    pub fn initrd_s(&self) -> f64 {
        self.written_s - self.init_started_s
    }
}

fn parse_stage(value: &Value, init_started_s: f64, written_s: f64) -> anyhow::Result<Stage> {
    let entry = value.as_object().context("not a JSON object")?;
    let name = text(entry, "stage")?;
    if name.is_empty() || name.chars().count() > MAX_STAGE_NAME_CHARS {
        bail!("`stage` must be 1 to {MAX_STAGE_NAME_CHARS} characters long");
    }
    let started_s = seconds(entry, "started_s")?;
    let duration_ms = milliseconds(entry, "duration_ms")?;
    let ok = entry.get("ok").context("`ok` is missing")?.as_bool().context("`ok` is not true or false")?;
    let outcome = if ok { Outcome::Done { detail: text(entry, "detail")? } } else { Outcome::Failed { error: text(entry, "error")? } };
    let stage = Stage { name, started_s, duration_ms, outcome };
    if stage.started_s < init_started_s - ROUNDING_SECONDS || stage.ended_s() > written_s + ROUNDING_SECONDS {
        bail!(
            "stage {:?} runs from {} s to {} s, outside keel-init's time from {init_started_s} s to {written_s} s",
            keel_disk::printable(&stage.name),
            stage.started_s,
            stage.ended_s()
        );
    }
    Ok(stage)
}

fn text(object: &Map<String, Value>, field: &str) -> anyhow::Result<String> {
    let value = object.get(field).with_context(|| format!("`{field}` is missing"))?;
    Ok(value.as_str().with_context(|| format!("`{field}` is not a string"))?.to_string())
}

/// A time in seconds: finite, not negative, and no larger than any uptime can be.
fn seconds(object: &Map<String, Value>, field: &str) -> anyhow::Result<f64> {
    bounded_number(object, field, MAX_SECONDS)
}

fn milliseconds(object: &Map<String, Value>, field: &str) -> anyhow::Result<f64> {
    bounded_number(object, field, MAX_SECONDS * 1000.0)
}

fn bounded_number(object: &Map<String, Value>, field: &str, max: f64) -> anyhow::Result<f64> {
    let value = object.get(field).with_context(|| format!("`{field}` is missing"))?;
    let number = value.as_f64().with_context(|| format!("`{field}` is not a number"))?;
    // serde_json holds no NaN or infinity, but says so only for its own parser's output.
    if !number.is_finite() || !(0.0..=max).contains(&number) {
        bail!("`{field}` is {number}; it must be between 0 and {max}");
    }
    // -0 is in the range, and would be shown as "-0.0ms".
    Ok(number + 0.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A boot as keel-init records one: the kernel took 1.5 s before /init, then two stages
    /// succeeded and a third failed.
    pub(crate) fn sample() -> Recorder {
        let ms = Duration::from_millis;
        let mut recorder = Recorder::new(ms(1500));
        recorder.record("mounts", ms(1501), ms(3), Ok("proc sys dev run"));
        recorder.record("usr", ms(1510), ms(480), Ok("verified"));
        recorder.record("first-boot", ms(2000), ms(1250), Err("no ROOT".to_string()));
        recorder
    }

    pub(crate) fn sample_timeline() -> Timeline {
        Timeline::parse(&sample().to_json(Duration::from_millis(3300))).unwrap()
    }

    fn with(edit: impl FnOnce(&mut Value)) -> String {
        let mut value: Value = serde_json::from_str(&sample().to_json(Duration::from_millis(3300))).unwrap();
        edit(&mut value);
        value.to_string()
    }

    fn refusal(text: &str) -> String {
        format!("{:#}", Timeline::parse(text).unwrap_err())
    }

    #[test]
    fn what_the_recorder_writes_reads_back_whole() {
        let timeline = sample_timeline();
        assert_eq!(timeline.init_started_s, 1.5);
        assert_eq!(timeline.written_s, 3.3);
        assert!((timeline.initrd_s() - 1.8).abs() < 1e-9);
        assert_eq!(timeline.stages, sample().stages);
        assert_eq!(timeline.stages[2].outcome, Outcome::Failed { error: "no ROOT".to_string() });
    }

    #[test]
    fn the_file_keeps_the_fields_the_real_root_has_always_read() {
        let value: Value = serde_json::from_str(&sample().to_json(Duration::from_millis(3300))).unwrap();
        assert_eq!(value["initrd_ms"], 1800.0);
        assert_eq!(value["stages"][1]["stage"], "usr");
        assert_eq!(value["stages"][1]["detail"], "verified");
        assert_eq!(value["stages"][2]["ok"], false);
        assert_eq!(value["stages"][2]["error"], "no ROOT");
        assert!(value["stages"][2].get("detail").is_none());
    }

    #[test]
    fn missing_fields_are_named() {
        for (field, edit) in [
            ("init_started_s", with(|v| drop(v.as_object_mut().unwrap().remove("init_started_s")))),
            ("stages", with(|v| drop(v.as_object_mut().unwrap().remove("stages")))),
            ("duration_ms", with(|v| drop(v["stages"][0].as_object_mut().unwrap().remove("duration_ms")))),
            ("detail", with(|v| drop(v["stages"][0].as_object_mut().unwrap().remove("detail")))),
            ("error", with(|v| drop(v["stages"][2].as_object_mut().unwrap().remove("error")))),
            ("ok", with(|v| drop(v["stages"][1].as_object_mut().unwrap().remove("ok")))),
        ] {
            let error = refusal(&edit);
            assert!(error.contains(&format!("`{field}` is missing")), "{field}: {error}");
        }
        assert!(refusal(&with(|v| drop(v["stages"][1].as_object_mut().unwrap().remove("ok")))).starts_with("stages[1]"));
    }

    #[test]
    fn numbers_that_no_clock_reads_are_refused() {
        for bad in [json!(-0.5), json!(1e300), json!("1.5"), json!(null)] {
            let error = refusal(&with(|v| v["stages"][0]["started_s"] = bad.clone()));
            assert!(error.contains("started_s"), "{bad}: {error}");
        }
        // JSON has no NaN or infinity; serde_json refuses a number it cannot hold.
        assert!(refusal(r#"{"init_started_s": 1e999}"#).contains("not JSON"));
        assert!(refusal(&with(|v| v["stages"][0]["duration_ms"] = json!(-1))).contains("`duration_ms` is -1"));
    }

    #[test]
    fn times_that_contradict_each_other_are_refused() {
        assert!(refusal(&with(|v| v["written_s"] = json!(1.0))).contains("before init_started_s"));
        assert!(refusal(&with(|v| v["initrd_ms"] = json!(5.0))).contains("not the time from"));
        // A stage before keel-init began, or one that ends after the file was written.
        assert!(refusal(&with(|v| v["stages"][0]["started_s"] = json!(0.2))).contains("outside keel-init's time"));
        assert!(refusal(&with(|v| v["stages"][2]["duration_ms"] = json!(99_999.0))).contains("outside keel-init's time"));
    }

    #[test]
    fn shapes_that_are_not_a_timeline_are_refused() {
        assert!(refusal("[]").contains("not a JSON object"));
        assert!(refusal("{").contains("not JSON"));
        assert!(refusal(&with(|v| v["stages"] = json!({}))).contains("`stages` is not an array"));
        assert!(refusal(&with(|v| v["stages"][0] = json!("mounts"))).contains("stages[0]: not a JSON object"));
        assert!(refusal(&with(|v| v["stages"][0]["stage"] = json!(""))).contains("1 to 64 characters"));
        assert!(refusal(&with(|v| v["stages"][0]["stage"] = json!("x".repeat(65)))).contains("1 to 64 characters"));
        assert!(refusal(&with(|v| v["stages"][0]["ok"] = json!("yes"))).contains("`ok` is not true or false"));
    }

    #[test]
    fn only_a_regular_file_is_read_and_a_fifo_is_not_waited_on() {
        let dir = keel_test_support::scratch_dir(std::env::temp_dir().join("keel-timeline-tests"), "regular_file");
        let fifo = dir.join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(format!("{:#}", Timeline::read(&fifo).unwrap_err()).contains("is not a regular file"));
        assert!(format!("{:#}", Timeline::read(&dir).unwrap_err()).contains("is not a regular file"));
        let latin1 = dir.join("latin1.json");
        std::fs::write(&latin1, b"{\"stage\": \"caf\xe9\"}").unwrap();
        assert!(format!("{:#}", Timeline::read(&latin1).unwrap_err()).contains("is not UTF-8 text"));
    }

    #[test]
    fn negative_zero_reads_as_zero() {
        let timeline = Timeline::parse(&with(|v| v["stages"][0]["duration_ms"] = json!(-0.0))).unwrap();
        assert!(timeline.stages[0].duration_ms.is_sign_positive(), "{:?}", timeline.stages[0]);
    }

    #[test]
    fn size_bounds_hold() {
        let too_many = with(|v| v["stages"] = json!(vec![v["stages"][0].clone(); MAX_STAGES + 1]));
        assert!(refusal(&too_many).contains("never has more than 256"));
        let padded = format!("{}{}", sample().to_json(Duration::from_millis(3300)), " ".repeat(MAX_BYTES as usize));
        assert!(refusal(&padded).contains("larger than"));
        let dir = keel_test_support::scratch_dir(std::env::temp_dir().join("keel-timeline-tests"), "size_bounds_hold");
        let path = dir.join("large.json");
        std::fs::write(&path, &padded).unwrap();
        assert!(format!("{:#}", Timeline::read(&path).unwrap_err()).contains("larger than 1048576 bytes"));
        std::fs::write(&path, sample().to_json(Duration::from_millis(3300))).unwrap();
        assert_eq!(Timeline::read(&path).unwrap(), sample_timeline());
    }
}
