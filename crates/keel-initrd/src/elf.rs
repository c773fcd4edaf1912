//! Just enough ELF to find what a dynamically linked program needs at run time: its
//! interpreter (PT_INTERP) and its libraries (DT_NEEDED), the way ld.so would.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// Where ld.so looks on a Debian x86-64 system, in its order.
const LIBRARY_DIRS: [&str; 6] = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"];

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;

struct Elf<'a> {
    bytes: &'a [u8],
}

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> anyhow::Result<Elf<'a>> {
        if bytes.get(..4) != Some(b"\x7fELF") {
            bail!("not an ELF file");
        }
        if bytes.get(4..6) != Some(&[2, 1]) {
            bail!("not a 64-bit little-endian ELF file");
        }
        Ok(Elf { bytes })
    }

    fn u16_at(&self, at: usize) -> anyhow::Result<u16> {
        let b = self.bytes.get(at..at + 2).context("truncated ELF")?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, at: usize) -> anyhow::Result<u32> {
        let b = self.bytes.get(at..at + 4).context("truncated ELF")?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_at(&self, at: usize) -> anyhow::Result<u64> {
        Ok(u64::from(self.u32_at(at)?) | u64::from(self.u32_at(at + 4)?) << 32)
    }

    /// (type, file offset, virtual address, file size) of each program header.
    fn program_headers(&self) -> anyhow::Result<Vec<(u32, u64, u64, u64)>> {
        let offset = self.u64_at(0x20)? as usize;
        let size = usize::from(self.u16_at(0x36)?);
        let count = usize::from(self.u16_at(0x38)?);
        (0..count)
            .map(|i| {
                let at = offset + i * size;
                Ok((self.u32_at(at)?, self.u64_at(at + 8)?, self.u64_at(at + 16)?, self.u64_at(at + 32)?))
            })
            .collect()
    }

    fn c_string(&self, at: usize) -> anyhow::Result<String> {
        let rest = self.bytes.get(at..).context("string outside the file")?;
        let end = rest.iter().position(|&b| b == 0).context("unterminated string")?;
        Ok(String::from_utf8_lossy(&rest[..end]).to_string())
    }

    fn interpreter(&self) -> anyhow::Result<Option<String>> {
        let headers = self.program_headers()?;
        headers.iter().find(|h| h.0 == PT_INTERP).map(|h| self.c_string(h.1 as usize)).transpose()
    }

    fn needed(&self) -> anyhow::Result<Vec<String>> {
        let headers = self.program_headers()?;
        let Some(dynamic) = headers.iter().find(|h| h.0 == PT_DYNAMIC) else { return Ok(Vec::new()) };
        let mut needed_offsets = Vec::new();
        let mut strtab_vaddr = None;
        for entry in (dynamic.1..dynamic.1 + dynamic.3).step_by(16) {
            let (tag, value) = (self.u64_at(entry as usize)?, self.u64_at(entry as usize + 8)?);
            match tag {
                DT_NULL => break,
                DT_NEEDED => needed_offsets.push(value),
                DT_STRTAB => strtab_vaddr = Some(value),
                _ => {}
            }
        }
        let strtab_vaddr = strtab_vaddr.context("dynamic section without a string table")?;
        // The string table is addressed by virtual address: find the segment that maps it.
        let load = headers
            .iter()
            .find(|h| h.0 == PT_LOAD && h.2 <= strtab_vaddr && strtab_vaddr < h.2 + h.3)
            .context("the string table is in no loaded segment")?;
        let strtab = strtab_vaddr - load.2 + load.1;
        needed_offsets.iter().map(|offset| self.c_string((strtab + offset) as usize)).collect()
    }
}

/// One file to copy: where it goes in the initrd and where its bytes are on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFile {
    pub initrd_path: String,
    pub host_path: PathBuf,
}

/// The interpreter and every library `program` needs, transitively, each once.
/// `host_root` is the root of the system the libraries come from (`/` on the build host).
pub fn library_closure(host_root: &Path, program: &Path) -> anyhow::Result<Vec<HostFile>> {
    let mut files: Vec<HostFile> = Vec::new();
    let mut interpreter_name: Option<String> = None;
    let mut queue = vec![program.to_path_buf()];
    while let Some(path) = queue.pop() {
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let elf = Elf::parse(&bytes).with_context(|| format!("{}", path.display()))?;
        let mut wanted: Vec<String> = Vec::new();
        if let Some(interp) = elf.interpreter().with_context(|| format!("{}", path.display()))? {
            interpreter_name = interp.rsplit('/').next().map(str::to_string);
            wanted.push(interp);
        }
        for name in elf.needed().with_context(|| format!("{}", path.display()))? {
            // libc names the dynamic loader as a dependency; the loader answers to that
            // soname itself, so the interpreter copied already is the one it gets.
            if interpreter_name.as_deref() == Some(name.as_str()) {
                continue;
            }
            let found = LIBRARY_DIRS
                .iter()
                .map(|dir| format!("{dir}/{name}"))
                .find(|candidate| host_path(host_root, candidate).exists())
                .with_context(|| format!("{} needs {name}, which is in none of {LIBRARY_DIRS:?}", path.display()))?;
            wanted.push(found);
        }
        for initrd_path in wanted {
            if files.iter().any(|f| f.initrd_path == initrd_path) {
                continue;
            }
            let host_path = host_path(host_root, &initrd_path);
            queue.push(host_path.clone());
            files.push(HostFile { initrd_path, host_path });
        }
    }
    files.sort_by(|a, b| a.initrd_path.cmp(&b.initrd_path));
    Ok(files)
}

fn host_path(host_root: &Path, absolute: &str) -> PathBuf {
    host_root.join(absolute.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_mkfs_ext4_needs() {
        let files = library_closure(Path::new("/"), Path::new("/usr/sbin/mkfs.ext4")).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.initrd_path.rsplit('/').next().unwrap()).collect();
        for expected in ["ld-linux-x86-64.so.2", "libc.so.6", "libext2fs.so.2", "libcom_err.so.2", "libblkid.so.1", "libuuid.so.1", "libe2p.so.2"] {
            assert_eq!(names.iter().filter(|n| **n == expected).count(), 1, "{expected} not exactly once in {files:?}");
        }
        assert!(files.iter().any(|f| f.initrd_path == "/lib64/ld-linux-x86-64.so.2"), "the interpreter is not at its PT_INTERP path");
    }

    #[test]
    fn rejects_what_is_not_elf() {
        assert!(Elf::parse(b"#!/bin/sh\n").is_err());
        assert!(Elf::parse(b"\x7fELF\x01\x01").is_err());
        let truncated = Elf::parse(b"\x7fELF\x02\x01\0\0").unwrap();
        assert!(truncated.needed().is_err());
    }
}
