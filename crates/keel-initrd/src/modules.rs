use anyhow::{bail, Context};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// The kernel's own spelling rule: `dm-mod` and `dm_mod` are the same module.
fn module_name(path_or_name: &str) -> String {
    let file = path_or_name.rsplit('/').next().unwrap_or(path_or_name);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The modules that provide kernel crypto algorithm `algorithm` (`alias crypto-<name>` in
/// modules.alias): dm-verity asks the kernel for its hash, and with no modprobe in the
/// initrd, a hash built as a module must be loaded beforehand. Accelerated variants come
/// too; on a CPU without their instructions they decline to load, which keel-init expects.
pub fn crypto_providers(modules_dir: &Path, algorithm: &str) -> anyhow::Result<Vec<String>> {
    let alias_path = modules_dir.join("modules.alias");
    let aliases = std::fs::read_to_string(&alias_path).with_context(|| format!("cannot read {} (run depmod)", alias_path.display()))?;
    let wanted = format!("crypto-{algorithm}");
    Ok(aliases
        .lines()
        .filter_map(|line| line.strip_prefix("alias "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(alias, _)| *alias == wanted)
        .map(|(_, module)| module.trim().to_string())
        .collect())
}

/// The modules to load for `wanted`, dependencies first, as paths relative to the
/// kernel's module directory. Built-in modules need no loading and are left out.
pub fn module_closure(modules_dir: &Path, wanted: &[String]) -> anyhow::Result<Vec<String>> {
    let dep_path = modules_dir.join("modules.dep");
    let dep_text = std::fs::read_to_string(&dep_path).with_context(|| format!("cannot read {} (run depmod for this kernel)", dep_path.display()))?;
    let builtin: BTreeSet<String> =
        std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default().lines().map(module_name).collect();
    let mut deps: HashMap<String, (String, Vec<String>)> = HashMap::new();
    for line in dep_text.lines() {
        let Some((path, needs)) = line.split_once(':') else { continue };
        deps.insert(module_name(path), (path.to_string(), needs.split_whitespace().map(str::to_string).collect()));
    }
    let mut ordered = Vec::new();
    let mut visiting = BTreeSet::new();
    for name in wanted {
        let name = module_name(name);
        if builtin.contains(&name) {
            continue;
        }
        if !deps.contains_key(&name) {
            bail!("kernel module {name} is neither in {} nor built in", dep_path.display());
        }
        visit(&name, &deps, &mut visiting, &mut ordered)?;
    }
    Ok(ordered)
}

fn visit(
    name: &str,
    deps: &HashMap<String, (String, Vec<String>)>,
    visiting: &mut BTreeSet<String>,
    ordered: &mut Vec<String>,
) -> anyhow::Result<()> {
    let (path, needs) = deps.get(name).with_context(|| format!("modules.dep names {name} as a dependency but has no entry for it"))?;
    if ordered.contains(path) {
        return Ok(());
    }
    if !visiting.insert(name.to_string()) {
        bail!("modules.dep has a dependency cycle through {name}");
    }
    for need in needs {
        visit(&module_name(need), deps, visiting, ordered)?;
    }
    ordered.push(path.clone());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_first_builtins_skipped_each_once() {
        let dir = std::env::temp_dir().join(format!("keel-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("modules.dep"),
            "kernel/virtio_pci.ko: kernel/virtio_ring.ko kernel/virtio.ko\nkernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko\n\
             kernel/virtio.ko:\nkernel/virtio_ring.ko: kernel/virtio.ko\nkernel/dm-verity.ko: kernel/dm-mod.ko\nkernel/dm-mod.ko:\n",
        )
        .unwrap();
        std::fs::write(dir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        std::fs::write(dir.join("modules.alias"), "alias crypto-sha512 sha512_ssse3\nalias crypto-sha512 sha512_generic\nalias pci:v* virtio_pci\n")
            .unwrap();
        assert_eq!(crypto_providers(&dir, "sha512").unwrap(), ["sha512_ssse3", "sha512_generic"]);
        assert!(crypto_providers(&dir, "sha256").unwrap().is_empty());
        let wanted: Vec<String> = ["virtio_pci", "virtio-blk", "dm_verity", "ext4"].map(String::from).to_vec();
        let order = module_closure(&dir, &wanted).unwrap();
        assert_eq!(
            order,
            ["kernel/virtio.ko", "kernel/virtio_ring.ko", "kernel/virtio_pci.ko", "kernel/virtio_blk.ko", "kernel/dm-mod.ko", "kernel/dm-verity.ko"]
        );
        assert!(module_closure(&dir, &["nonexistent".to_string()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
