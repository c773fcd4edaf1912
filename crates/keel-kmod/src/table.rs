//! The driver table an initrd carries: which of its modules drives which devices (their
//! `modules.alias` patterns), and what to load for each, dependencies first. The initrd
//! builder writes it; keel-init matches each device's modalias against it, as udev and
//! kmod would, so a machine loads the drivers for the buses it has and no others.

use crate::alias;
use anyhow::{bail, Context};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverTable {
    /// By driver (module name): the module files to load, dependencies first.
    load_lists: BTreeMap<String, Vec<String>>,
    /// (pattern, driver), in the order they were added.
    aliases: Vec<(String, String)>,
}

const HEADER: &str = "# keel-init loads a driver when a device's modalias matches one of its aliases.\n\
                      # driver NAME FILE... (dependencies first)\n\
                      # alias PATTERN NAME\n";

impl DriverTable {
    /// Adds `driver`, loaded by `load_list`, for the devices `patterns` match.
    pub fn insert(&mut self, driver: &str, load_list: Vec<String>, patterns: impl IntoIterator<Item = String>) {
        self.load_lists.insert(driver.to_string(), load_list);
        self.aliases.extend(patterns.into_iter().map(|pattern| (pattern, driver.to_string())));
    }

    pub fn drivers(&self) -> impl Iterator<Item = &str> {
        self.load_lists.keys().map(String::as_str)
    }

    pub fn load_list(&self, driver: &str) -> &[String] {
        self.load_lists.get(driver).map_or(&[], Vec::as_slice)
    }

    /// The buses (`/sys/bus/<name>`) whose devices can match an alias, or `None` when that
    /// takes every bus. A device's modalias starts with its bus's name (`pci:`,
    /// `virtio:`, `scsi:`, `usb:`, `xen:`), except that a device described by firmware may
    /// carry `acpi:` or `of:` on whichever bus it sits (a platform device, an I2C one), so
    /// an alias with those prefixes, or with a wildcard before its first `:`, needs every
    /// bus. Aliases without a `:` (`block-major-8-*`, `crypto-…`) name no device at all.
    pub fn buses(&self) -> Option<BTreeSet<String>> {
        let mut buses = BTreeSet::new();
        for (pattern, _) in &self.aliases {
            let Some((prefix, _)) = pattern.split_once(':') else { continue };
            if prefix.is_empty() || prefix == "acpi" || prefix == "of" || prefix.contains(['*', '?', '[', '\\']) {
                return None;
            }
            buses.insert(prefix.to_string());
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
            text.push_str(&format!("driver {driver} {}\n", files.join(" ")));
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
                    table.load_lists.insert(driver.to_string(), files.iter().map(|f| f.to_string()).collect());
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
    use super::DriverTable;

    fn sample() -> DriverTable {
        let mut table = DriverTable::default();
        let list = |files: &[&str]| files.iter().map(|f| f.to_string()).collect();
        table.insert("virtio_pci", list(&["/m/virtio.ko", "/m/virtio_pci.ko"]), ["pci:v00001AF4d*sv*sd*bc*sc*i*".to_string()]);
        table.insert("sd_mod", list(&["/m/scsi_mod.ko", "/m/sd_mod.ko"]), ["scsi:t-0x00*".to_string(), "scsi:t-0x0e*".to_string()]);
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
        assert_eq!(parsed.load_list("sd_mod"), ["/m/scsi_mod.ko", "/m/sd_mod.ko"]);
        assert!(parsed.load_list("ahci").is_empty());
        let buses: Vec<String> = parsed.buses().unwrap().into_iter().collect();
        assert_eq!(buses, ["pci", "scsi"]);
    }

    #[test]
    fn firmware_described_or_wildcard_buses_mean_every_bus() {
        for pattern in ["acpi*:QEMU0002:*", "acpi:QEMU0002:", "of:N*T*Cqemu,fw-cfg-mmio", "*:x", "p?i:v*"] {
            let mut table = sample();
            table.insert("other", vec!["/m/other.ko".to_string()], [pattern.to_string()]);
            assert_eq!(table.buses(), None, "{pattern}");
        }
        let mut table = sample();
        table.insert("sd_mod", vec!["/m/sd_mod.ko".to_string()], ["block-major-8-*".to_string()]);
        assert!(table.buses().is_some(), "an alias that names no device needs no bus");
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
