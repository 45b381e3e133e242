//! Finding the kernel modules the guest needs, with their dependencies, in load order.
//!
//! The Debian kernel package ships no modules.dep (depmod runs at install time, and we never
//! install it), so dependencies come from each module's own `.modinfo` `depends=` entry, the same
//! data depmod records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::elf::{self, ElfError};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("kernel modules directory {0} not found: run scripts/setup first")]
    DirMissing(PathBuf),
    #[error("kernel module {name} not found under {dir}")]
    Missing { name: String, dir: PathBuf },
    #[error("kernel module {0} is compressed; the image builder needs uncompressed .ko files")]
    Compressed(PathBuf),
    #[error("kernel module {path}: {source}")]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("kernel module dependency cycle through {0}")]
    Cycle(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A module to put in the image.
#[derive(Debug, Clone)]
pub struct Module {
    /// Canonical name (dashes as underscores), as `depends=` spells it.
    pub name: String,
    /// Path relative to `lib/modules/<version>`, e.g. `kernel/drivers/net/virtio_net.ko`.
    pub rel_path: String,
    pub deps: Vec<String>,
    pub bytes: Vec<u8>,
}

fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModuleError + '_ {
    move |source| ModuleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Maps module name to path for every module file under `dir` (recursively).
pub fn index(dir: &Path) -> Result<BTreeMap<String, PathBuf>, ModuleError> {
    if !dir.is_dir() {
        return Err(ModuleError::DirMissing(dir.to_path_buf()));
    }
    let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io_err(&d))? {
            let entry = entry.map_err(io_err(&d))?;
            let path = entry.path();
            let ft = entry.file_type().map_err(io_err(&path))?;
            if ft.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
                continue;
            };
            let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .find_map(|ext| file.strip_suffix(ext));
            if let Some(stem) = stem {
                let name = canonical(stem);
                // Prefer an uncompressed copy if both exist.
                let replace = match found.get(&name) {
                    None => true,
                    Some(p) => !is_plain(p) && is_plain(&path),
                };
                if replace {
                    found.insert(name, path);
                }
            }
        }
    }
    Ok(found)
}

fn is_plain(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "ko")
}

/// Loads `roots` and everything they depend on, dependencies first (the order to insmod them).
pub fn resolve(modules_dir: &Path, roots: &[&str]) -> Result<Vec<Module>, ModuleError> {
    let idx = index(modules_dir)?;
    let mut order = Vec::new();
    let mut done = BTreeSet::new();
    for root in roots {
        visit(
            modules_dir,
            &idx,
            &canonical(root),
            &mut Vec::new(),
            &mut done,
            &mut order,
        )?;
    }
    Ok(order)
}

fn visit(
    modules_dir: &Path,
    idx: &BTreeMap<String, PathBuf>,
    name: &str,
    path_stack: &mut Vec<String>,
    done: &mut BTreeSet<String>,
    order: &mut Vec<Module>,
) -> Result<(), ModuleError> {
    if done.contains(name) {
        return Ok(());
    }
    if path_stack.iter().any(|n| n == name) {
        return Err(ModuleError::Cycle(name.to_string()));
    }
    let module = load(modules_dir, idx, name)?;
    path_stack.push(name.to_string());
    for dep in &module.deps {
        visit(modules_dir, idx, dep, path_stack, done, order)?;
    }
    path_stack.pop();
    done.insert(name.to_string());
    order.push(module);
    Ok(())
}

fn load(
    modules_dir: &Path,
    idx: &BTreeMap<String, PathBuf>,
    name: &str,
) -> Result<Module, ModuleError> {
    let path = idx.get(name).ok_or_else(|| ModuleError::Missing {
        name: name.to_string(),
        dir: modules_dir.to_path_buf(),
    })?;
    if !is_plain(path) {
        return Err(ModuleError::Compressed(path.clone()));
    }
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let info = elf::modinfo(&bytes).map_err(|source| ModuleError::Elf {
        path: path.clone(),
        source,
    })?;
    let deps = info
        .iter()
        .filter(|(k, _)| k == "depends")
        .flat_map(|(_, v)| v.split(','))
        .filter(|d| !d.is_empty())
        .map(canonical)
        .collect();
    let rel_path = path
        .strip_prefix(modules_dir)
        .ok()
        .and_then(|p| p.to_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("kernel/{name}.ko"));
    Ok(Module {
        name: name.to_string(),
        rel_path,
        deps,
        bytes,
    })
}

/// A modules.dep for the chosen modules, so `modprobe` works inside the guest too.
pub fn modules_dep(mods: &[Module]) -> String {
    let path_of: BTreeMap<&str, &str> = mods
        .iter()
        .map(|m| (m.name.as_str(), m.rel_path.as_str()))
        .collect();
    let mut out = String::new();
    for m in mods {
        out.push_str(&m.rel_path);
        out.push(':');
        // modules.dep lists the full transitive closure, nearest first.
        for dep in closure(m, mods) {
            if let Some(p) = path_of.get(dep.as_str()) {
                out.push(' ');
                out.push_str(p);
            }
        }
        out.push('\n');
    }
    out
}

fn closure(m: &Module, mods: &[Module]) -> Vec<String> {
    let by_name: BTreeMap<&str, &Module> = mods.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut seen = Vec::<String>::new();
    let mut queue: Vec<String> = m.deps.clone();
    while let Some(d) = (!queue.is_empty()).then(|| queue.remove(0)) {
        if seen.contains(&d) {
            continue;
        }
        if let Some(dm) = by_name.get(d.as_str()) {
            queue.extend(dm.deps.iter().cloned());
        }
        seen.push(d);
    }
    seen
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::image::elf::fake_elf;

    /// Writes a fake module `name` depending on `deps` under `dir/kernel/<sub>/`.
    pub fn write_module(dir: &Path, sub: &str, name: &str, deps: &[&str]) {
        let info = format!("license=GPL\0depends={}\0name={name}\0", deps.join(","));
        let elf = fake_elf(&[(".modinfo", info.as_bytes())], false);
        let d = dir.join("kernel").join(sub);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{name}.ko")), elf).unwrap();
    }

    /// The real virtio dependency graph of Debian's 6.1 cloud kernel.
    pub fn write_virtio_tree(dir: &Path) {
        write_module(dir, "drivers/virtio", "virtio", &[]);
        write_module(dir, "drivers/virtio", "virtio_ring", &[]);
        write_module(dir, "drivers/virtio", "virtio_pci_modern_dev", &[]);
        write_module(dir, "drivers/virtio", "virtio_pci_legacy_dev", &[]);
        write_module(
            dir,
            "drivers/virtio",
            "virtio_pci",
            &[
                "virtio_ring",
                "virtio_pci_modern_dev",
                "virtio_pci_legacy_dev",
                "virtio",
            ],
        );
        write_module(dir, "net/core", "failover", &[]);
        write_module(dir, "drivers/net", "net_failover", &["failover"]);
        write_module(
            dir,
            "drivers/net",
            "virtio_net",
            &["virtio_ring", "virtio", "net_failover"],
        );
        write_module(
            dir,
            "drivers/block",
            "virtio_blk",
            &["virtio", "virtio_ring"],
        );
        write_module(
            dir,
            "drivers/char",
            "virtio_console",
            &["virtio", "virtio_ring"],
        );
        write_module(dir, "drivers/unrelated", "sound-thing", &[]);
    }

    #[test]
    fn resolves_in_dependency_order() {
        let tmp = tempfile::tempdir().unwrap();
        write_virtio_tree(tmp.path());
        let mods = resolve(tmp.path(), &["virtio_pci", "virtio_net", "virtio_blk"]).unwrap();
        let names: Vec<&str> = mods.iter().map(|m| m.name.as_str()).collect();
        let pos = |n| names.iter().position(|x| *x == n).unwrap();
        assert_eq!(names.len(), 9, "{names:?}");
        assert!(pos("virtio") < pos("virtio_pci"));
        assert!(pos("virtio_ring") < pos("virtio_net"));
        assert!(pos("failover") < pos("net_failover"));
        assert!(pos("net_failover") < pos("virtio_net"));
        assert!(!names.contains(&"sound_thing"));
        let net = &mods[pos("virtio_net")];
        assert_eq!(net.rel_path, "kernel/drivers/net/virtio_net.ko");
        let dep = modules_dep(&mods);
        assert!(dep.contains("kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n"));
    }

    #[test]
    fn dashes_and_underscores_are_one_name() {
        let tmp = tempfile::tempdir().unwrap();
        write_virtio_tree(tmp.path());
        let mods = resolve(tmp.path(), &["sound_thing"]).unwrap();
        assert_eq!(mods[0].rel_path, "kernel/drivers/unrelated/sound-thing.ko");
    }

    #[test]
    fn errors() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            resolve(&tmp.path().join("nope"), &["x"]),
            Err(ModuleError::DirMissing(_))
        ));
        write_module(tmp.path(), "a", "needs_ghost", &["ghost"]);
        let e = resolve(tmp.path(), &["needs_ghost"]).unwrap_err();
        assert!(
            matches!(&e, ModuleError::Missing { name, .. } if name == "ghost"),
            "{e}"
        );
        write_module(tmp.path(), "a", "ping", &["pong"]);
        write_module(tmp.path(), "a", "pong", &["ping"]);
        assert!(matches!(
            resolve(tmp.path(), &["ping"]),
            Err(ModuleError::Cycle(_))
        ));
        std::fs::write(tmp.path().join("kernel/a/packed.ko.xz"), b"xz").unwrap();
        assert!(matches!(
            resolve(tmp.path(), &["packed"]),
            Err(ModuleError::Compressed(_))
        ));
        std::fs::write(tmp.path().join("kernel/a/junk.ko"), b"junk").unwrap();
        assert!(matches!(
            resolve(tmp.path(), &["junk"]),
            Err(ModuleError::Elf { .. })
        ));
    }
}
