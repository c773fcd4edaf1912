//! `/etc/.ignition-result.json` as Ignition 2.14 writes it at the end of the files stage: the
//! boot's id, the time (RFC 3339, UTC in the initrd), whether a user config was found, and
//! any earlier result nested as `previousReport`; pretty-printed with two spaces and a final
//! newline, 0600, root's, replacing whatever was there. It changes on every run, so it is the
//! one step a second plan against an applied root still holds.
//!
//! Every rerun nests the previous file one level deeper, so the previous result is never
//! parsed into a recursive value (serde_json stops at 128 levels, which would end reruns at the
//! 129th): the chain of `previousReport`s is walked level by level, each level's other members
//! parsed on their own, and the whole re-indented with sorted keys as Go's encoder writes it.
//! Where keel differs from Ignition, on purpose: a previous file larger than
//! [`MAX_PREVIOUS_RESULT_BYTES`] is refused (remove it) rather than read whole, and only the
//! newest [`MAX_PREVIOUS_REPORTS`] reports are kept, the oldest dropped, so the file keel writes
//! stays far below that bound however often first boot is rerun.

use super::{default_dir_attrs, ApplyError, Contents, ErrorKind, Op, Planner, ROOT_OWNER};
use crate::report::JsonPath;
use crate::root::{Attrs, Kind};
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const RESULT_FILE: &str = "/etc/.ignition-result.json";
const RESULT_MODE: u32 = 0o600;
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const PREVIOUS_REPORT: &str = "previousReport";
/// A result keel writes holds at most [`MAX_PREVIOUS_REPORTS`] nested reports of a few hundred
/// bytes each (plus indentation): some 100 KiB. A larger file is not one of keel's or
/// Ignition's first-boot results.
pub const MAX_PREVIOUS_RESULT_BYTES: u64 = 1 << 20;
/// How many earlier results are kept nested; older ones are dropped.
pub const MAX_PREVIOUS_REPORTS: usize = 100;
const INDENT: &str = "  ";

/// Field order is Ignition's; `previousReport` is left out when there is none.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResultFile {
    #[serde(rename = "provisioningBootID")]
    provisioning_boot_id: String,
    provisioning_date: String,
    user_config_provided: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_report: Option<Box<RawValue>>,
}

/// One report of the chain: its members other than `previousReport`, sorted as Go sorts a
/// map's keys, and whether the next (older) report is kept inside it.
enum Report {
    Object {
        members: BTreeMap<String, serde_json::Value>,
        holds_older: bool,
    },
    /// A `previousReport` that is not an object (Go's decoder takes any JSON value there).
    Value(serde_json::Value),
}

/// The previous file's reports, newest first, without recursing into the nesting.
fn previous_reports(bytes: &[u8]) -> Result<Vec<Report>, serde_json::Error> {
    // Validates the whole document with serde_json's iterative skipping of nested values.
    let mut next: Box<RawValue> = serde_json::from_slice(bytes)?;
    let mut reports = Vec::new();
    while reports.len() < MAX_PREVIOUS_REPORTS {
        let Ok(mut members) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(next.get()) else {
            reports.push(Report::Value(serde_json::from_str(next.get())?));
            break;
        };
        let older = members.remove(PREVIOUS_REPORT);
        let members = members.into_iter().map(|(key, raw)| Ok((key, serde_json::from_str(raw.get())?))).collect::<Result<_, serde_json::Error>>()?;
        let holds_older = older.is_some() && reports.len() + 1 < MAX_PREVIOUS_REPORTS;
        reports.push(Report::Object { members, holds_older });
        match older {
            Some(older) => next = older,
            None => break,
        }
    }
    Ok(reports)
}

fn indent(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str(INDENT);
    }
}

/// `value` pretty-printed as it appears `depth` levels deep (newlines in JSON text are always
/// structural: a string's are escaped).
fn push_value(out: &mut String, value: &serde_json::Value, depth: usize) -> Result<(), serde_json::Error> {
    let text = serde_json::to_string_pretty(value)?;
    let mut lines = text.split('\n');
    out.push_str(lines.next().unwrap_or_default());
    for line in lines {
        indent(out, depth);
        out.push_str(line);
    }
    Ok(())
}

fn push_member(out: &mut String, written: &mut usize, depth: usize, key: &str) -> Result<(), serde_json::Error> {
    if *written > 0 {
        out.push(',');
    }
    *written += 1;
    indent(out, depth + 1);
    out.push_str(&serde_json::to_string(key)?);
    out.push_str(": ");
    Ok(())
}

/// An object whose `previousReport` is being written: its depth, how many members it has so
/// far, and the members that sort after `previousReport`.
type Unfinished<'a> = (usize, usize, Vec<(&'a String, &'a serde_json::Value)>);

/// The reports as one JSON value starting `depth` levels deep, each nested in the one before,
/// written front to back with an explicit stack of the members still due after each nesting.
fn render_reports(reports: &[Report], depth: usize) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    let mut unfinished: Vec<Unfinished> = Vec::new();
    for (level, report) in reports.iter().enumerate() {
        let depth = depth + level;
        let (members, holds_older) = match report {
            Report::Value(value) => {
                push_value(&mut out, value, depth)?;
                break;
            }
            Report::Object { members, holds_older } => (members, *holds_older),
        };
        if members.is_empty() && !holds_older {
            out.push_str("{}");
            break;
        }
        out.push('{');
        let mut written = 0;
        let (before, after): (Vec<_>, Vec<_>) = members.iter().partition(|(key, _)| key.as_str() < PREVIOUS_REPORT);
        for (key, value) in before {
            push_member(&mut out, &mut written, depth, key)?;
            push_value(&mut out, value, depth + 1)?;
        }
        if holds_older {
            push_member(&mut out, &mut written, depth, PREVIOUS_REPORT)?;
            unfinished.push((depth, written, after));
            continue;
        }
        unfinished.push((depth, written, after));
        break;
    }
    while let Some((depth, mut written, after)) = unfinished.pop() {
        for (key, value) in after {
            push_member(&mut out, &mut written, depth, key)?;
            push_value(&mut out, value, depth + 1)?;
        }
        indent(&mut out, depth);
        out.push('}');
    }
    Ok(out)
}

/// The previous result re-indented one level deep, as the new result's `previousReport`.
fn nested_previous(bytes: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    RawValue::from_string(render_reports(&previous_reports(bytes)?, 1)?)
}

pub(crate) fn plan_result(planner: &mut Planner, user_config_provided: bool) -> Result<(), ApplyError> {
    let at = JsonPath::root();
    let path = planner.resolve(&at, RESULT_FILE)?;
    let existing = planner.probe(&at, &path)?;
    let previous_report = match &existing {
        Some(node) if node.kind == Kind::File => {
            if let Some(size) = node.on_disk.map(|meta| meta.size).filter(|size| *size > MAX_PREVIOUS_RESULT_BYTES) {
                return Err(ApplyError::new(
                    &at,
                    &path,
                    ErrorKind::PreviousResult,
                    format!("the previous result file is {size} bytes, more than the {MAX_PREVIOUS_RESULT_BYTES} keel reads: remove it"),
                ));
            }
            let previous = planner.contents(&at, &path, node)?;
            Some(nested_previous(&previous).map_err(|error| {
                ApplyError::new(&at, &path, ErrorKind::PreviousResult, format!("the previous result file is not JSON ({error}): remove it"))
            })?)
        }
        _ => None,
    };
    let boot_id = std::fs::read_to_string(BOOT_ID)
        .map_err(|error| ApplyError::new(&at, BOOT_ID, ErrorKind::Io, format!("cannot read the boot id: {error}")))?;
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let result = ResultFile {
        provisioning_boot_id: boot_id.trim().to_owned(),
        provisioning_date: rfc3339_utc(seconds),
        user_config_provided,
        previous_report,
    };
    let mut bytes = serde_json::to_vec_pretty(&result)
        .map_err(|error| ApplyError::new(&at, &path, ErrorKind::Io, format!("cannot encode the result: {error}")))?;
    bytes.push(b'\n');
    match existing {
        Some(node) if node.kind != Kind::File => planner.push(&at, Op::Remove { path: path.clone() })?,
        Some(_) => {}
        None => planner.ensure_parents(&at, &path, default_dir_attrs())?,
    }
    let attrs = Attrs { mode: RESULT_MODE, uid: ROOT_OWNER.0, gid: ROOT_OWNER.1 };
    planner.push(&at, Op::WriteFile { path, contents: Contents { bytes: Arc::new(bytes), secret: false }, attrs, append_record: None })?;
    Ok(())
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`, Go's `time.RFC3339` for UTC (also
/// SPDX's creation time, keel-sbom).
pub fn rfc3339_utc(seconds: u64) -> String {
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil_date(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", of_day / 3600, of_day % 3600 / 60, of_day % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01, counted in 400-year eras of 146097
/// days that start on 1 March, so the leap day falls at the end of each era-year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_in_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(4_107_542_400), "2100-03-01T00:00:00Z");
    }

    #[test]
    fn result_fields_are_in_ignitions_order_and_previous_report_is_optional() {
        let result = ResultFile {
            provisioning_boot_id: "id".to_owned(),
            provisioning_date: "date".to_owned(),
            user_config_provided: true,
            previous_report: None,
        };
        let text = serde_json::to_string_pretty(&result).unwrap();
        assert_eq!(text, "{\n  \"provisioningBootID\": \"id\",\n  \"provisioningDate\": \"date\",\n  \"userConfigProvided\": true\n}");
        let nested = ResultFile { previous_report: Some(nested_previous(br#"{"b": 1, "a": {}}"#).unwrap()), ..result };
        assert!(serde_json::to_string_pretty(&nested).unwrap().ends_with("\"previousReport\": {\n    \"a\": {},\n    \"b\": 1\n  }\n}"));
    }

    /// Go's encoder re-indents a decoded map with sorted keys, which is what serde_json's
    /// recursive `Value` (a sorted map) gives for documents shallow enough for it.
    fn as_value_would_nest(previous: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(previous).unwrap();
        let mut out = String::new();
        push_value(&mut out, &value, 1).unwrap();
        out
    }

    #[test]
    fn a_previous_result_is_re_indented_with_sorted_keys_as_a_recursive_value_would_be() {
        for previous in [
            r#"{"provisioningBootID":"b","userConfigProvided":true,"previousReport":{"zeta":[1,{"y":2,"x":[]}],"alpha":"a\nb","previousReport":{}}}"#,
            r#"{"previousReport":null,"a":1}"#,
            r#"{"previousReport":[{"b":1,"a":2}],"z":{}}"#,
            r#"{"previousReport":{"previousReport":{"previousReport":{"k":"v"},"zz":1},"aa":2}}"#,
            r#"[3, {"b": 1, "a": 2}]"#,
            r#""just a string""#,
            "{}",
        ] {
            assert_eq!(render_reports(&previous_reports(previous.as_bytes()).unwrap(), 1).unwrap(), as_value_would_nest(previous), "{previous}");
        }
    }

    fn chain(reports: usize) -> String {
        let mut nested = String::from(r#"{"provisioningBootID":"0"}"#);
        for index in 1..reports {
            nested = format!(r#"{{"provisioningBootID":"{index}","previousReport":{nested}}}"#);
        }
        nested
    }

    #[test]
    fn only_the_newest_reports_are_kept_and_the_oldest_dropped() {
        let kept = render_reports(&previous_reports(chain(MAX_PREVIOUS_REPORTS + 5).as_bytes()).unwrap(), 1).unwrap();
        assert_eq!(kept.matches("provisioningBootID").count(), MAX_PREVIOUS_REPORTS);
        assert!(kept.contains(&format!("\"{}\"", MAX_PREVIOUS_REPORTS + 4)) && kept.contains("\"5\"") && !kept.contains("\"4\""), "{kept}");
        let all = render_reports(&previous_reports(chain(MAX_PREVIOUS_REPORTS).as_bytes()).unwrap(), 1).unwrap();
        assert!(all.contains("\"0\""));
        assert_eq!(serde_json::from_str::<Box<RawValue>>(&kept).unwrap().get(), kept);
    }

    #[test]
    fn a_previous_result_that_is_not_json_at_any_depth_is_refused() {
        let broken = chain(200).replacen(r#""0""#, "0x", 1);
        assert!(previous_reports(broken.as_bytes()).is_err());
    }
}

#[cfg(test)]
mod file_tests {
    use super::super::test_support::*;
    use super::super::{plan, ErrorKind};

    const EMPTY: &str = r#"{"ignition":{"version":"3.3.0"}}"#;

    #[test]
    fn the_result_file_is_0600_and_a_rerun_nests_the_previous_one() {
        let (path, root) = fresh_root("result");
        let first = apply(&root, EMPTY);
        assert_eq!(first.steps().len(), 1);
        let result = path.join("etc/.ignition-result.json");
        assert_eq!(mode_owner(&result), (0o600, 0, 0));
        let text = std::fs::read_to_string(&result).unwrap();
        assert!(text.starts_with("{\n  \"provisioningBootID\": \"") && text.ends_with("\"userConfigProvided\": true\n}\n"), "{text}");
        assert!(!text.contains("previousReport"));
        let plan = plan(&config(EMPTY), &root, false).unwrap();
        plan.execute(&root).unwrap();
        let rerun: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
        assert_eq!(rerun["userConfigProvided"], false);
        assert_eq!(rerun["previousReport"]["userConfigProvided"], true);
    }

    #[test]
    fn a_previous_result_that_is_not_json_is_an_error() {
        let (path, root) = fresh_root("result-bad");
        std::fs::write(path.join("etc/.ignition-result.json"), "not json").unwrap();
        let error = plan(&config(EMPTY), &root, true).unwrap_err();
        assert_eq!(error.kind, ErrorKind::PreviousResult);
    }

    #[test]
    fn a_deeply_nested_previous_result_is_kept_not_refused() {
        let (path, root) = crate::apply::test_support::fresh_root("review-result-depth");
        let mut nested = String::from(r#"{"provisioningBootID":"x"}"#);
        for _ in 0..130 {
            nested = format!(r#"{{"provisioningBootID":"x","previousReport":{nested}}}"#);
        }
        std::fs::write(path.join("etc/.ignition-result.json"), nested).unwrap();
        let plan = plan(&config(EMPTY), &root, true).unwrap();
        plan.execute(&root).unwrap();
        let written = std::fs::read_to_string(path.join("etc/.ignition-result.json")).unwrap();
        assert_eq!(written.matches("provisioningBootID").count(), super::MAX_PREVIOUS_REPORTS + 1);
    }

    #[test]
    fn a_previous_result_larger_than_the_bound_is_refused_unread() {
        let (path, root) = fresh_root("result-huge");
        let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(super::MAX_PREVIOUS_RESULT_BYTES as usize));
        std::fs::write(path.join("etc/.ignition-result.json"), &huge).unwrap();
        let error = plan(&config(EMPTY), &root, true).unwrap_err();
        assert_eq!(error.kind, ErrorKind::PreviousResult);
        assert!(error.to_string().contains("remove it"), "{error}");
        std::fs::write(path.join("etc/.ignition-result.json"), format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000))).unwrap();
        assert!(plan(&config(EMPTY), &root, true).is_ok());
    }
}
