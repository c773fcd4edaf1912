//! What `keel initrd build` writes for keel-init to load: load lists (module files,
//! dependencies first), and the driver table: which of its modules drives which devices
//! (their `modules.alias` patterns), and the load list of each. keel-init matches each
//! device's modalias against the table, as udev and kmod would, so a machine loads the
//! drivers for the buses it has and no others.

use crate::alias;
use anyhow::{bail, Context};
use std::collections::{BTreeMap, BTreeSet};

/// One file of a load list: a module's path in the initrd, and whether the boot can do
/// without it. A soft dependency (an accelerated crc a filesystem asks for at run time) is
/// optional, as kmod treats it; it is written with a leading `?`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadEntry {
    pub path: String,
    pub optional: bool,
}

impl LoadEntry {
    fn parse(word: &str) -> LoadEntry {
        match word.strip_prefix('?') {
            Some(path) => LoadEntry { path: path.to_string(), optional: true },
            None => LoadEntry { path: word.to_string(), optional: false },
        }
    }

    fn to_word(&self) -> String {
        if self.optional {
            format!("?{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// A load list's text: one entry a line; blank lines and `#` comments are skipped.
    pub fn parse_list(text: &str) -> Vec<LoadEntry> {
        text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')).map(LoadEntry::parse).collect()
    }

    pub fn list_text(entries: &[LoadEntry]) -> String {
        entries.iter().map(|entry| format!("{}\n", entry.to_word())).collect()
    }
}

/// Alias prefixes that name the bus (`/sys/bus/<name>`) their devices sit on, for the
/// buses storage hangs from. FireWire's units say `ieee1394:` on bus `firewire`.
const BUS_OF_PREFIX: [(&str, &str); 10] = [
    ("pci", "pci"),
    ("virtio", "virtio"),
    ("scsi", "scsi"),
    ("usb", "usb"),
    ("xen", "xen"),
    ("vmbus", "vmbus"),
    ("mmc", "mmc"),
    ("sdio", "sdio"),
    ("nd", "nd"),
    ("ieee1394", "firewire"),
];

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverTable {
    /// By driver (module name): the module files to load, dependencies first.
    load_lists: BTreeMap<String, Vec<LoadEntry>>,
    /// (pattern, driver), in the order they were added.
    aliases: Vec<(String, String)>,
}

const HEADER: &str = "# keel-init loads a driver when a device's modalias matches one of its aliases.\n\
                      # driver NAME FILE... (dependencies first)\n\
                      # alias PATTERN NAME\n";

impl DriverTable {
    /// Adds `driver`, loaded by `load_list`, for the devices `patterns` match.
    pub fn insert(&mut self, driver: &str, load_list: Vec<LoadEntry>, patterns: impl IntoIterator<Item = String>) {
        self.load_lists.insert(driver.to_string(), load_list);
        self.aliases.extend(patterns.into_iter().map(|pattern| (pattern, driver.to_string())));
    }

    pub fn drivers(&self) -> impl Iterator<Item = &str> {
        self.load_lists.keys().map(String::as_str)
    }

    pub fn load_list(&self, driver: &str) -> &[LoadEntry] {
        self.load_lists.get(driver).map_or(&[], Vec::as_slice)
    }

    /// The buses (`/sys/bus/<name>`) whose devices can match an alias, or `None` when that
    /// takes every bus. Most buses' devices say the bus's name first (`pci:`, `virtio:`,
    /// `scsi:`), but not all (FireWire's say `ieee1394:`, a platform device described by
    /// firmware `acpi:` or `of:`), so only the prefixes of `BUS_OF_PREFIX` narrow the
    /// search; any other, or a wildcard before the first `:`, takes every bus. Aliases
    /// without a `:` (`block-major-8-*`, `crypto-…`) name no device at all.
    pub fn buses(&self) -> Option<BTreeSet<String>> {
        let mut buses = BTreeSet::new();
        for (pattern, _) in &self.aliases {
            let Some((prefix, _)) = pattern.split_once(':') else { continue };
            let (_, bus) = BUS_OF_PREFIX.iter().find(|(known, _)| *known == prefix)?;
            buses.insert(bus.to_string());
        }
        Some(buses)
    }

    /// The drivers for a device with this modalias, each once, in table order.
    pub fn drivers_for(&self, modalias: &str) -> Vec<&str> {
        let mut drivers: Vec<&str> = Vec::new();
        for (pattern, driver) in &self.aliases {
            if !drivers.contains(&driver.as_str()) && alias::matches(pattern, modalias) {
                drivers.push(driver);
            }
        }
        drivers
    }

    pub fn to_text(&self) -> String {
        let mut text = HEADER.to_string();
        for (driver, files) in &self.load_lists {
            let words: Vec<String> = files.iter().map(LoadEntry::to_word).collect();
            text.push_str(&format!("driver {driver} {}\n", words.join(" ")));
        }
        for (pattern, driver) in &self.aliases {
            text.push_str(&format!("alias {pattern} {driver}\n"));
        }
        text
    }

    pub fn parse(text: &str) -> anyhow::Result<DriverTable> {
        let mut table = DriverTable::default();
        for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line.trim())) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["driver", driver, files @ ..] if !files.is_empty() => {
                    table.load_lists.insert(driver.to_string(), files.iter().map(|word| LoadEntry::parse(word)).collect());
                }
                ["alias", pattern, driver] => {
                    if !table.load_lists.contains_key(*driver) {
                        bail!("line {number}: alias for {driver}, which has no driver line before it");
                    }
                    table.aliases.push((pattern.to_string(), driver.to_string()));
                }
                _ => {
                    return Err(anyhow::anyhow!("{line:?}"))
                        .with_context(|| format!("line {number} is neither `driver NAME FILE...` nor `alias PATTERN NAME`"))
                }
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::{DriverTable, LoadEntry};

    fn sample() -> DriverTable {
        let mut table = DriverTable::default();
        let list = |files: &[&str]| files.iter().map(|f| LoadEntry::parse(f)).collect();
        table.insert("virtio_pci", list(&["/m/virtio.ko", "/m/virtio_pci.ko"]), ["pci:v00001AF4d*sv*sd*bc*sc*i*".to_string()]);
        table.insert(
            "sd_mod",
            list(&["?/m/crc_t10dif.ko", "/m/scsi_mod.ko", "/m/sd_mod.ko"]),
            ["scsi:t-0x00*".to_string(), "scsi:t-0x0e*".to_string()],
        );
        table.insert("nvme", list(&["/m/nvme.ko"]), ["pci:v*d*sv*sd*bc01sc08i02*".to_string()]);
        table
    }

    #[test]
    fn text_round_trips_and_matches_modaliases() {
        let table = sample();
        let parsed = DriverTable::parse(&table.to_text()).unwrap();
        assert_eq!(parsed, table);
        assert_eq!(parsed.drivers_for("pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc00i00"), ["virtio_pci"]);
        assert_eq!(parsed.drivers_for("pci:v00001AF4d00001042sv00001AF4sd00001100bc01sc08i02"), ["virtio_pci", "nvme"]);
        assert_eq!(parsed.drivers_for("scsi:t-0x00"), ["sd_mod"]);
        assert!(parsed.drivers_for("scsi:t-0x05").is_empty());
        let words: Vec<String> = parsed.load_list("sd_mod").iter().map(LoadEntry::to_word).collect();
        assert_eq!(words, ["?/m/crc_t10dif.ko", "/m/scsi_mod.ko", "/m/sd_mod.ko"]);
        assert!(parsed.load_list("sd_mod")[0].optional && !parsed.load_list("sd_mod")[1].optional);
        assert!(parsed.load_list("ahci").is_empty());
        let buses: Vec<String> = parsed.buses().unwrap().into_iter().collect();
        assert_eq!(buses, ["pci", "scsi"]);
    }

    #[test]
    fn firmware_described_or_wildcard_buses_mean_every_bus() {
        for pattern in ["acpi*:QEMU0002:*", "acpi:QEMU0002:", "of:N*T*Cqemu,fw-cfg-mmio", "*:x", "p?i:v*", "sdw:m*p*v*c*", "platform:x"] {
            let mut table = sample();
            table.insert("other", vec![LoadEntry::parse("/m/other.ko")], [pattern.to_string()]);
            assert_eq!(table.buses(), None, "{pattern}");
        }
        let mut table = sample();
        table.insert("sd_mod", vec![LoadEntry::parse("/m/sd_mod.ko")], ["block-major-8-*".to_string()]);
        assert!(table.buses().is_some(), "an alias that names no device needs no bus");
        table.insert("firewire_sbp2", vec![LoadEntry::parse("/m/firewire-sbp2.ko")], ["ieee1394:ven*mo*sp0000609Ever00010483*".to_string()]);
        assert!(table.buses().unwrap().contains("firewire"), "FireWire units sit on bus firewire");
    }

    #[test]
    fn malformed_tables_are_refused_with_the_line() {
        for (text, says) in [
            ("alias pci:* ahci\n", "line 1: alias for ahci"),
            ("driver ahci\n", "line 1 is neither"),
            ("# ok\nmodule x y\n", "line 2 is neither"),
            ("driver a /a.ko\nalias p a extra\n", "line 2 is neither"),
        ] {
            let error = format!("{:#}", DriverTable::parse(text).unwrap_err());
            assert!(error.contains(says), "{text:?}: {error}");
        }
    }
}
