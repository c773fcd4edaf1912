use std::fmt;

/// How a command line names a block device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// GPT partition GUID, lower case.
    PartUuid(String),
    /// GPT partition name.
    PartLabel(String),
    /// Filesystem label.
    Label(String),
    /// Filesystem UUID, lower case.
    Uuid(String),
    /// A device node such as `/dev/vda3`.
    Path(String),
}

impl DeviceSpec {
    pub fn parse(text: &str) -> anyhow::Result<DeviceSpec> {
        let spec = match text.split_once('=') {
            Some(("PARTUUID", id)) => DeviceSpec::PartUuid(id.to_ascii_lowercase()),
            Some(("PARTLABEL", name)) => DeviceSpec::PartLabel(name.to_string()),
            Some(("LABEL", name)) => DeviceSpec::Label(name.to_string()),
            Some(("UUID", id)) => DeviceSpec::Uuid(id.to_ascii_lowercase()),
            _ if text.starts_with('/') => DeviceSpec::Path(text.to_string()),
            _ => anyhow::bail!("{text:?} is not a device: use PARTUUID=, PARTLABEL=, LABEL=, UUID= or a /dev path"),
        };
        match &spec {
            DeviceSpec::PartUuid(v) | DeviceSpec::PartLabel(v) | DeviceSpec::Label(v) | DeviceSpec::Uuid(v) if v.is_empty() => {
                anyhow::bail!("{text:?} names no device")
            }
            DeviceSpec::PartUuid(guid) if !is_guid(guid) => {
                anyhow::bail!("{text:?}: a PARTUUID is a GUID such as 7130c94a-213a-4e5a-8e26-6cce9662f132")
            }
            _ => Ok(spec),
        }
    }
}

/// Five groups of 8-4-4-4-12 hex digits.
fn is_guid(text: &str) -> bool {
    text.len() == 36 && text.bytes().enumerate().all(|(i, b)| if matches!(i, 8 | 13 | 18 | 23) { b == b'-' } else { b.is_ascii_hexdigit() })
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::PartUuid(v) => write!(f, "PARTUUID={v}"),
            DeviceSpec::PartLabel(v) => write!(f, "PARTLABEL={v}"),
            DeviceSpec::Label(v) => write!(f, "LABEL={v}"),
            DeviceSpec::Uuid(v) => write!(f, "UUID={v}"),
            DeviceSpec::Path(v) => f.write_str(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form_and_round_trips() {
        for text in ["PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132", "PARTLABEL=USR-B", "LABEL=ROOT", "UUID=abcd", "/dev/vda9"] {
            assert_eq!(DeviceSpec::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            DeviceSpec::parse("PARTUUID=7130C94A-213A-4E5A-8E26-6CCE9662F132").unwrap(),
            DeviceSpec::PartUuid("7130c94a-213a-4e5a-8e26-6cce9662f132".into())
        );
    }

    #[test]
    fn rejects_what_names_no_device() {
        for text in ["vda3", "LABEL=", "FOO=bar", "", "PARTUUID=ab\u{20ac}\u{20ac}-0000-0000-0000-000000000000", "PARTUUID=1234"] {
            assert!(DeviceSpec::parse(text).is_err(), "{text:?} accepted");
        }
    }
}
