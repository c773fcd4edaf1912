//! Loading modules the way keel-init must, with no modprobe: `finit_module` on each file,
//! dependencies first.

use crate::dep::module_name;
use crate::table::{DriverTable, LoadEntry};
use anyhow::Context;
use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
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

/// Each module file is loaded once per process, whichever thread asks first; the others
/// wait for that load and share its result. Two threads loading one module at once would
/// otherwise race in the kernel: the second waits for the first, and gets EBUSY instead of
/// EEXIST if the first declined (Linux 6.1's add_unformed_module), failing a driver that
/// only shares a soft dependency with another.
fn load_once(path: &str) -> Result<FileLoad, String> {
    /// One file's load: done by the first thread to ask, awaited by the others.
    type SharedLoad = Arc<OnceLock<Result<FileLoad, String>>>;
    static FILES: OnceLock<Mutex<HashMap<String, SharedLoad>>> = OnceLock::new();
    let cell = {
        let mut files = FILES.get_or_init(Mutex::default).lock().unwrap_or_else(PoisonError::into_inner);
        files.entry(path.to_string()).or_default().clone()
    };
    let mut first = false;
    let result = cell
        .get_or_init(|| {
            first = true;
            load_file(path).map_err(|error| format!("{error:#}"))
        })
        .clone();
    match result {
        Ok(FileLoad::Loaded) if !first => Ok(FileLoad::AlreadyThere),
        other => other,
    }
}

/// Loads one entry of a load list. An optional file that fails (a soft dependency: kmod
/// ignores their errors too) counts as declined.
fn load_entry(entry: &LoadEntry) -> Result<FileLoad, String> {
    match load_once(&entry.path) {
        Err(_) if entry.optional => Ok(FileLoad::Declined),
        result => result,
    }
}

/// What loading the listed modules did.
pub struct Loaded {
    pub count: usize,
    pub declined: usize,
    /// The module that took longest, and how long: the first place to look when boot is slow.
    pub slowest: Option<(String, Duration)>,
}

/// Loads each module of `list` (a load list as `keel initrd build` wrote it: paths,
/// dependencies first, optional ones marked); modules the kernel already has are skipped.
pub fn load_listed(list: &str) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded { count: 0, declined: 0, slowest: None };
    for entry in LoadEntry::parse_list(list) {
        let started = Instant::now();
        match load_entry(&entry).map_err(anyhow::Error::msg)? {
            FileLoad::Loaded => {
                loaded.count += 1;
                let took = started.elapsed();
                if loaded.slowest.as_ref().is_none_or(|(_, slowest)| took > *slowest) {
                    loaded.slowest = Some((module_name(&entry.path), took));
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
    /// What the kernel did with its files, or why it refused one.
    pub outcome: Result<FileCounts, String>,
}

/// Of one driver's files: how many the kernel took, and how many declined (found nothing
/// to drive); the rest it had already.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileCounts {
    pub loaded: usize,
    pub declined: usize,
}

impl DriverLoad {
    /// One line for the boot log.
    pub fn describe(&self) -> String {
        let millis = self.took.as_secs_f64() * 1000.0;
        let (driver, modalias) = (&self.driver, &self.modalias);
        match &self.outcome {
            Ok(FileCounts { loaded: 0, declined: 0 }) => format!("driver {driver} for {modalias} was already loaded"),
            Ok(FileCounts { loaded, declined: 0 }) => format!("driver {driver} loaded for {modalias} ({loaded} modules, {millis:.1} ms)"),
            Ok(FileCounts { loaded, declined }) => {
                format!("driver {driver} loaded for {modalias} ({loaded} modules, {declined} declined, {millis:.1} ms)")
            }
            Err(error) => format!("driver {driver} for {modalias} FAILED: {error}"),
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
    let mut counts = FileCounts::default();
    for entry in table.load_list(&driver) {
        match load_entry(entry) {
            Ok(FileLoad::Loaded) => counts.loaded += 1,
            Ok(FileLoad::Declined) => counts.declined += 1,
            Ok(FileLoad::AlreadyThere) => {}
            Err(error) => return DriverLoad { driver, modalias, took: started.elapsed(), outcome: Err(error) },
        }
    }
    DriverLoad { driver, modalias, took: started.elapsed(), outcome: Ok(counts) }
}
