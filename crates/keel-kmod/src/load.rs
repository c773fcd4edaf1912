//! Loading modules the way keel-init must, with no modprobe: `finit_module` on each file,
//! dependencies first.

use crate::table::DriverTable;
use anyhow::Context;
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs::File;
use std::time::{Duration, Instant};

/// What loading one module file did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileLoad {
    Loaded,
    /// The kernel has it already: built in, loaded before, or just loaded by another
    /// thread (a second load of a module in progress waits for the first, then says so).
    AlreadyThere,
    /// It found nothing to drive: accelerated crypto on a CPU without the instructions it
    /// needs says ENODEV, and the generic one does the work instead.
    Declined,
}

fn load_file(path: &str) -> anyhow::Result<FileLoad> {
    let file = File::open(path).with_context(|| format!("cannot open kernel module {path}"))?;
    match finit_module(&file, &CString::default(), ModuleInitFlags::empty()) {
        Ok(()) => Ok(FileLoad::Loaded),
        Err(Errno::EEXIST) => Ok(FileLoad::AlreadyThere),
        Err(Errno::ENODEV) => Ok(FileLoad::Declined),
        Err(errno) => {
            let hint = match errno {
                Errno::ENOEXEC => " (built for another kernel?)",
                Errno::ENOENT => " (a dependency is missing from the initrd?)",
                _ => "",
            };
            Err(errno).with_context(|| format!("the kernel refused module {path}{hint}"))
        }
    }
}

fn file_stem(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path).trim_end_matches(".ko")
}

/// What loading the listed modules did.
pub struct Loaded {
    pub count: usize,
    pub declined: usize,
    /// The module that took longest, and how long: the first place to look when boot is slow.
    pub slowest: Option<(String, Duration)>,
}

/// Loads each module of `list` (paths, dependencies first, as `keel initrd build` wrote
/// them); modules the kernel already has are skipped.
pub fn load_listed(list: &str) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded { count: 0, declined: 0, slowest: None };
    for path in list.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
        let started = Instant::now();
        match load_file(path)? {
            FileLoad::Loaded => {
                loaded.count += 1;
                let took = started.elapsed();
                if loaded.slowest.as_ref().is_none_or(|(_, slowest)| took > *slowest) {
                    loaded.slowest = Some((file_stem(path).to_string(), took));
                }
            }
            FileLoad::AlreadyThere => {}
            FileLoad::Declined => loaded.declined += 1,
        }
    }
    Ok(loaded)
}

/// What loading one driver (its files, dependencies first) did.
#[derive(Debug)]
pub struct DriverLoad {
    pub driver: String,
    /// The modalias that asked for it.
    pub modalias: String,
    pub took: Duration,
    /// How many files the kernel took (0: it had them all), or why it refused one.
    pub outcome: Result<usize, String>,
}

impl DriverLoad {
    /// One line for the boot log.
    pub fn describe(&self) -> String {
        let millis = self.took.as_secs_f64() * 1000.0;
        match &self.outcome {
            Ok(0) => format!("driver {} for {} was already loaded", self.driver, self.modalias),
            Ok(files) => format!("driver {} loaded for {} ({files} modules, {millis:.1} ms)", self.driver, self.modalias),
            Err(error) => format!("driver {} for {} FAILED: {error}", self.driver, self.modalias),
        }
    }
}

/// The initrd's drivers, each loaded at most once, when a device that needs it shows up.
pub struct Drivers {
    table: DriverTable,
    tried: BTreeSet<String>,
}

impl Drivers {
    pub fn new(table: DriverTable) -> Drivers {
        Drivers { table, tried: BTreeSet::new() }
    }

    /// The buses whose devices these drivers may drive (see `DriverTable::buses`).
    pub fn buses(&self) -> Option<BTreeSet<String>> {
        self.table.buses()
    }

    /// Loads the drivers these modaliases match that were not tried before, each in a
    /// thread of its own: probing one bus's devices does not wait for another's. A driver
    /// that fails is reported, not fatal: the disk may hang off another bus.
    pub fn load_for<'a>(&mut self, modaliases: impl IntoIterator<Item = &'a str>) -> Vec<DriverLoad> {
        let mut wanted: Vec<(String, String)> = Vec::new();
        for modalias in modaliases {
            for driver in self.table.drivers_for(modalias) {
                if self.tried.insert(driver.to_string()) {
                    wanted.push((driver.to_string(), modalias.to_string()));
                }
            }
        }
        let table = &self.table;
        std::thread::scope(|scope| {
            let running: Vec<_> = wanted
                .into_iter()
                .map(|(driver, modalias)| {
                    let (d, m) = (driver.clone(), modalias.clone());
                    let thread = std::thread::Builder::new().spawn_scoped(scope, move || load_driver(table, d, m));
                    (driver, modalias, thread)
                })
                .collect();
            running
                .into_iter()
                .map(|(driver, modalias, thread)| match thread {
                    Ok(thread) => thread.join().unwrap_or_else(|_| DriverLoad {
                        driver,
                        modalias,
                        took: Duration::ZERO,
                        outcome: Err("its loader thread panicked".into()),
                    }),
                    // No thread to be had: load it here, once the others are under way.
                    Err(_) => load_driver(table, driver, modalias),
                })
                .collect()
        })
    }
}

fn load_driver(table: &DriverTable, driver: String, modalias: String) -> DriverLoad {
    let started = Instant::now();
    let mut outcome = Ok(0);
    for path in table.load_list(&driver) {
        match load_file(path) {
            Ok(FileLoad::Loaded) => outcome = outcome.map(|files| files + 1),
            Ok(FileLoad::AlreadyThere | FileLoad::Declined) => {}
            Err(error) => {
                outcome = Err(format!("{error:#}"));
                break;
            }
        }
    }
    DriverLoad { driver, modalias, took: started.elapsed(), outcome }
}
