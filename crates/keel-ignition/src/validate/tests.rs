//! Whole configs, parsed and validated as keel-boot will: what Ignition says about each.

use super::*;
use crate::config::parse;
use crate::report::Level;

/// The findings for a document, as `(level, path)` pairs.
fn findings(document: &str) -> Vec<(Level, String)> {
    let parsed = parse(document.as_bytes()).unwrap_or_else(|error| panic!("{error}: {document}"));
    validate(&parsed.config, parsed.version).into_iter().map(|report| (report.level, report.path.to_string())).collect()
}

const E: Level = Level::Error;
const W: Level = Level::Warning;

fn expect(document: &str, expected: &[(Level, &str)]) {
    let expected: Vec<(Level, String)> = expected.iter().map(|(level, path)| (*level, path.to_string())).collect();
    assert_eq!(findings(document), expected, "{document}");
}

#[test]
fn whole_configs_get_ignitions_findings_in_document_order() {
    let table: &[(&str, &[(Level, &str)])] = &[
        (r#"{"ignition": {"version": "3.3.0"}}"#, &[]),
        (
            r#"{"ignition": {"version": "3.3.0"},
                "systemd": {"units": [{"name": "a.service", "enabled": true, "contents": "[Unit]\nA=b\n"}]},
                "storage": {"files": [{"path": "/etc/a/"}, {"path": "/etc/a", "mode": 2541}],
                            "directories": [{"path": "/etc/a"}]},
                "passwd": {"users": [{"name": "core"}, {"name": "core"}]}}"#,
            &[
                (E, "$.passwd.users[1]"),
                (E, "$.storage.files[0].path"),
                (E, "$.storage.files[1]"),
                (W, "$.storage.files[1].mode"),
                (W, "$.systemd.units[0].contents"),
            ],
        ),
        (
            // The same special mode bits are fine in 3.6; a link path under a link is not.
            r#"{"ignition": {"version": "3.6.0"},
                "storage": {"files": [{"path": "/l/f", "mode": 2541}], "links": [{"path": "/l", "target": "/t"}]}}"#,
            &[(E, "$.storage.files[0]")],
        ),
        (
            r#"{"ignition": {"version": "3.0.0", "config": {"merge": [{"source": "gs://b/c"}]}},
                "storage": {"files": [{"path": "/f", "contents": {"source": "data:,x", "verification": {"hash": "sha256-00"}}}]}}"#,
            &[(E, "$.ignition.config.merge[0].source"), (E, "$.storage.files[0].contents.verification.hash")],
        ),
        (r#"{"ignition": {"version": "3.2.0", "config": {"merge": [{"source": "gs://b/c"}]}}}"#, &[]),
        (
            r#"{"ignition": {"version": "3.4.0"},
                "kernelArguments": {"shouldExist": ["quiet"], "shouldNotExist": ["quiet"]},
                "storage": {"links": [{"path": "/h", "target": "/t", "hard": true, "user": {"name": "core"}}],
                            "files": [{"path": "/etc/systemd/system/a.service"}]},
                "systemd": {"units": [{"name": "a.service", "contents": "[Unit]\n"}]}}"#,
            &[(E, "$.kernelArguments.shouldNotExist[0]"), (E, "$.storage.files[0].path"), (W, "$.storage.links[0].user.name")],
        ),
        (
            r#"{"ignition": {"version": "3.3.0"},
                "storage": {"disks": [{"device": "/dev/sda", "partitions": [{"label": "root"}, {"number": 2, "shouldExist": false}]}],
                            "filesystems": [{"device": "/dev/sda", "format": "ext4", "label": "a-label-that-is-too-long"}]}}"#,
            &[(E, "$.storage.disks[0].partitions"), (E, "$.storage.filesystems[0].label")],
        ),
        (
            r#"{"ignition": {"version": "3.4.0"},
                "storage": {"disks": [{"device": "/dev/sda", "partitions": [{"label": "root"}, {"number": 2, "shouldExist": false}]}],
                            "filesystems": [{"device": "/dev/sda", "format": "ext4"}]}}"#,
            &[(W, "$.storage.filesystems[0].device")],
        ),
        (
            r#"{"ignition": {"version": "3.5.0", "proxy": {"httpsProxy": "http://proxy:3128"}},
                "storage": {"luks": [{"name": "data", "device": "/dev/sdb", "cex": {"enabled": true}, "clevis": {"tpm2": true}}],
                            "raid": [{"name": "md", "level": "stripe", "spares": 1, "devices": ["/dev/a"]}]}}"#,
            &[(W, "$.ignition.proxy.httpsProxy"), (E, "$.storage.luks[0].cex"), (E, "$.storage.raid[0].level")],
        ),
    ];
    for (document, expected) in table {
        expect(document, expected);
    }
}

#[test]
fn messages_name_the_value_but_not_secrets() {
    let document = r#"{"ignition": {"version": "3.3.0"},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": ["ssh-ed25519 AAAAsecret", "ssh-ed25519 AAAAsecret"]}]},
        "storage": {"files": [{"path": "relative/path", "contents": {"source": "data:;base64,c2VjcmV0!", "httpHeaders": [{"name": "Authorization", "value": ""}]}}]}}"#;
    let parsed = parse(document.as_bytes()).unwrap();
    let reports = validate(&parsed.config, parsed.version);
    let messages: Vec<&str> = reports.iter().map(|report| report.message.as_str()).collect();
    assert!(messages.iter().any(|message| message.contains("\"relative/path\"")), "{messages:?}");
    assert!(messages.iter().all(|message| !message.contains("secret") && !message.contains("c2VjcmV0")), "{messages:?}");
}

#[test]
fn document_order_puts_a_node_before_its_fields_and_fields_alphabetically() {
    let mut paths =
        vec!["$.systemd", "$.storage.files[10]", "$.storage.files[2].path", "$.storage.files[2]", "$.storage.directories[5]", "$.ignition"];
    paths.sort_by(|left, right| document_order(left, right));
    assert_eq!(
        paths,
        ["$.ignition", "$.storage.directories[5]", "$.storage.files[2]", "$.storage.files[2].path", "$.storage.files[10]", "$.systemd"]
    );
}

#[test]
fn hostile_numbers_do_not_panic() {
    let document = r#"{"ignition": {"version": "3.6.0", "timeouts": {"httpTotal": -9223372036854775808}},
        "storage": {"files": [{"path": "/f", "mode": -9223372036854775808, "user": {"id": 9223372036854775807}}],
                    "disks": [{"device": "/dev/a", "partitions": [
                        {"number": -9223372036854775808, "startMiB": 9223372036854775807, "sizeMiB": 9223372036854775807},
                        {"number": 9223372036854775807, "startMiB": -9223372036854775808, "sizeMiB": -9223372036854775808}]}],
                    "raid": [{"name": "r", "level": "raid0", "spares": -9223372036854775808, "devices": ["/dev/b"]}]}}"#;
    let findings = findings(document);
    assert!(findings.contains(&(E, "$.storage.files[0].mode".to_owned())), "{findings:?}");
}
