//! What a kernel's module directory says about its modules: `modules.dep` (which file,
//! needing which others), `modules.softdep` (what a module asks for at run time rather
//! than links against: ext4 and btrfs ask for crc32c), `modules.builtin` (compiled in,
//! nothing to load) and `modules.alias` (which module drives which devices, or provides
//! which algorithm).

use crate::table::LoadEntry;
use anyhow::{bail, Context};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The kernel's own spelling rule: `dm-mod` and `dm_mod` are the same module.
pub fn module_name(path_or_name: &str) -> String {
    let file = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// One kernel's module directory, `/lib/modules/<version>`, read once.
pub struct ModuleIndex {
    dir: PathBuf,
    /// By module name: its path relative to `dir`, and the paths it needs.
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: BTreeSet<String>,
    /// By module name: the modules or aliases to load before it, and after it.
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
    /// `modules.alias` in its order: (pattern, module name).
    aliases: Vec<(String, String)>,
}

impl ModuleIndex {
    pub fn read(modules_dir: &Path) -> anyhow::Result<ModuleIndex> {
        let read = |name: &str| {
            let path = modules_dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {} (run depmod for this kernel)", path.display()))
        };
        let mut deps = HashMap::new();
        for line in read("modules.dep")?.lines() {
            let Some((path, needs)) = line.split_once(':') else { continue };
            deps.insert(module_name(path), (path.to_string(), needs.split_whitespace().map(str::to_string).collect()));
        }
        // A kernel without modules.builtin has nothing built in that keel asks for.
        let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default().lines().map(module_name).collect();
        // Older kernels' depmod writes no modules.softdep; then there are none.
        let mut softdeps: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
        for line in std::fs::read_to_string(modules_dir.join("modules.softdep")).unwrap_or_default().lines() {
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else { continue };
            let entry = softdeps.entry(module_name(module)).or_default();
            // As kmod reads it: names count after `pre:` or `post:`, not before either.
            let mut list: Option<&mut Vec<String>> = None;
            for word in words {
                match word {
                    "pre:" => list = Some(&mut entry.0),
                    "post:" => list = Some(&mut entry.1),
                    name => {
                        if let Some(list) = list.as_mut() {
                            list.push(name.to_string());
                        }
                    }
                }
            }
        }
        let aliases = read("modules.alias")?
            .lines()
            .filter_map(|line| line.strip_prefix("alias "))
            .filter_map(|rest| rest.split_once(' '))
            .map(|(pattern, module)| (pattern.to_string(), module_name(module.trim())))
            .collect();
        Ok(ModuleIndex { dir: modules_dir.to_path_buf(), deps, builtin, softdeps, aliases })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&module_name(name))
    }

    /// Whether this kernel has the module at all, as a file or built in.
    pub fn has(&self, name: &str) -> bool {
        let name = module_name(name);
        self.builtin.contains(&name) || self.deps.contains_key(&name)
    }

    /// The modules that provide kernel crypto algorithm `algorithm` (`alias crypto-<name>`):
    /// dm-verity asks the kernel for its hash, and with no modprobe in the initrd, a hash
    /// built as a module must be loaded beforehand. Accelerated variants come too; on a CPU
    /// without their instructions they decline to load, which keel-init expects.
    pub fn crypto_providers(&self, algorithm: &str) -> Vec<String> {
        let wanted = format!("crypto-{algorithm}");
        self.aliases.iter().filter(|(alias, _)| *alias == wanted).map(|(_, module)| module.clone()).collect()
    }

    /// The patterns of `modules.alias` that name `module`, in the file's order.
    pub fn aliases_of<'a>(&'a self, module: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = module_name(module);
        self.aliases.iter().filter(move |(_, m)| *m == name).map(|(pattern, _)| pattern.as_str())
    }

    /// The modules whose aliases match `modalias`, each once, in `modules.alias` order.
    pub fn modules_matching(&self, modalias: &str) -> Vec<String> {
        let mut modules: Vec<String> = Vec::new();
        for (pattern, module) in &self.aliases {
            if !modules.contains(module) && crate::alias::matches(pattern, modalias) {
                modules.push(module.clone());
            }
        }
        modules
    }

    /// The modules to load for `wanted`, dependencies first, as paths relative to the
    /// module directory. Built-in modules need no loading and are left out. What only a
    /// soft dependency brings is optional (its load may fail, as kmod lets it).
    pub fn closure(&self, wanted: &[String]) -> anyhow::Result<Vec<LoadEntry>> {
        let mut ordered = Vec::new();
        let mut visiting = BTreeSet::new();
        for name in wanted {
            let name = module_name(name);
            if self.builtin.contains(&name) {
                continue;
            }
            if !self.deps.contains_key(&name) {
                bail!("kernel module {name} is neither in {} nor built in", self.dir.join("modules.dep").display());
            }
            self.visit(&name, false, &mut visiting, &mut ordered)?;
        }
        Ok(ordered)
    }

    fn visit(&self, name: &str, optional: bool, visiting: &mut BTreeSet<String>, ordered: &mut Vec<LoadEntry>) -> anyhow::Result<()> {
        let (path, needs) = self.deps.get(name).with_context(|| format!("modules.dep names {name} as a dependency but has no entry for it"))?;
        if let Some(entry) = ordered.iter_mut().find(|entry| &entry.path == path) {
            // Reached softly before, and now as something the boot needs: so are its own.
            if entry.optional && !optional {
                entry.optional = false;
                for need in needs {
                    self.visit(&module_name(need), false, visiting, ordered)?;
                }
            }
            return Ok(());
        }
        if !visiting.insert(name.to_string()) {
            bail!("modules.dep has a dependency cycle through {name}");
        }
        let (pre, post) = self.softdeps.get(name).map_or((&[][..], &[][..]), |(pre, post)| (pre.as_slice(), post.as_slice()));
        self.visit_soft(pre, visiting, ordered)?;
        for need in needs {
            self.visit(&module_name(need), optional, visiting, ordered)?;
        }
        ordered.push(LoadEntry { path: path.clone(), optional });
        self.visit_soft(post, visiting, ordered)
    }

    /// Soft dependencies name a module or an alias (`crypto-crc32c`); every module that
    /// provides it comes, as with `crypto_providers`. One built in or missing needs
    /// nothing, and one already on the way (a soft cycle) is not followed again.
    fn visit_soft(&self, names: &[String], visiting: &mut BTreeSet<String>, ordered: &mut Vec<LoadEntry>) -> anyhow::Result<()> {
        for wanted in names {
            let direct = module_name(wanted);
            let providers: Vec<String> = if self.has(&direct) {
                vec![direct]
            } else {
                self.aliases.iter().filter(|(pattern, _)| crate::alias::matches(pattern, wanted)).map(|(_, module)| module.clone()).collect()
            };
            for provider in providers {
                if !self.builtin.contains(&provider) && self.deps.contains_key(&provider) && !visiting.contains(&provider) {
                    self.visit(&provider, true, visiting, ordered)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module directory with virtio, dm and crypto modules, ext4 built in.
    pub(crate) fn sample_modules_dir(name: &str) -> PathBuf {
        let dir = keel_test_support::scratch_dir(std::env::temp_dir(), name);
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/virtio_pci.ko: kernel/virtio_ring.ko kernel/virtio.ko\nkernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/virtio.ko:\nkernel/virtio_ring.ko: kernel/virtio.ko\nkernel/dm-verity.ko: kernel/dm-mod.ko\nkernel/dm-mod.ko:\n\
             kernel/ext4.ko: kernel/jbd2.ko\nkernel/jbd2.ko:\nkernel/crc32c-intel.ko:\nkernel/crc32c_generic.ko:\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        std::fs::write(
            dir.join("modules.alias"),
            "alias crypto-sha512 sha512_ssse3\nalias crypto-sha512 sha512_generic\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000002v* virtio_blk\n",
        )
        .unwrap();
        dir
    }

    fn words(entry: &LoadEntry) -> String {
        LoadEntry::list_text(std::slice::from_ref(entry)).trim_end().to_string()
    }

    #[test]
    fn a_module_reached_softly_and_then_hard_is_needed_with_its_dependencies() {
        let dir = sample_modules_dir("keel-kmod-softdep-upgrade");
        std::fs::write(dir.join("modules.softdep"), "softdep dm_mod pre: virtio_blk\n").unwrap();
        let index = ModuleIndex::read(&dir).unwrap();
        let order: Vec<String> = index.closure(&["dm-mod".to_string(), "virtio_blk".to_string()]).unwrap().iter().map(words).collect();
        assert_eq!(order, ["kernel/virtio.ko", "kernel/virtio_ring.ko", "kernel/virtio_blk.ko", "kernel/dm-mod.ko"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn soft_dependencies_come_first_through_their_aliases() {
        let dir = sample_modules_dir("keel-kmod-softdep");
        std::fs::write(dir.join("modules.builtin"), "").unwrap();
        std::fs::write(dir.join("modules.alias"), "alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n").unwrap();
        std::fs::write(
            dir.join("modules.softdep"),
            "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c\nsoftdep jbd2 pre: crypto-crc32c\nsoftdep cifs gcm\n\
             softdep dm_verity post: virtio_blk missing_module\nsoftdep crc32c_intel pre: ext4\n",
        )
        .unwrap();
        let index = ModuleIndex::read(&dir).unwrap();
        let order: Vec<String> = index.closure(&["ext4".to_string(), "dm-verity".to_string()]).unwrap().iter().map(words).collect();
        assert_eq!(
            order,
            [
                "?kernel/crc32c-intel.ko",
                "?kernel/crc32c_generic.ko",
                "kernel/jbd2.ko",
                "kernel/ext4.ko",
                "kernel/dm-mod.ko",
                "kernel/dm-verity.ko",
                "?kernel/virtio.ko",
                "?kernel/virtio_ring.ko",
                "?kernel/virtio_blk.ko"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dependencies_first_builtins_skipped_each_once() {
        let dir = sample_modules_dir("keel-kmod-dep");
        let index = ModuleIndex::read(&dir).unwrap();
        assert_eq!(index.crypto_providers("sha512"), ["sha512_ssse3", "sha512_generic"]);
        assert!(index.crypto_providers("sha256").is_empty());
        assert_eq!(index.aliases_of("virtio-pci").collect::<Vec<_>>(), ["pci:v00001AF4d*sv*sd*bc*sc*i*"]);
        let wanted: Vec<String> = ["virtio_pci", "virtio-blk", "dm_verity", "ext4"].map(String::from).to_vec();
        let order: Vec<String> = index.closure(&wanted).unwrap().iter().map(words).collect();
        assert_eq!(
            order,
            ["kernel/virtio.ko", "kernel/virtio_ring.ko", "kernel/virtio_pci.ko", "kernel/virtio_blk.ko", "kernel/dm-mod.ko", "kernel/dm-verity.ko"]
        );
        assert_eq!(index.modules_matching("virtio:d00000002v00001AF4"), ["virtio_blk"]);
        assert!(index.modules_matching("virtio:d00000008v00001AF4").is_empty());
        assert!(index.has("ext4") && index.is_builtin("ext4") && index.has("dm-mod") && !index.has("ahci"));
        assert!(index.closure(&["nonexistent".to_string()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
