//! Just enough ELF64 reading for the image builder: a kernel module's `.modinfo` strings (for its
//! dependencies, since the Debian package ships no modules.dep) and whether a binary is static.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not a little-endian ELF64 file")]
    NotElf64,
    #[error("truncated or malformed ELF ({0})")]
    Malformed(&'static str),
}

const SHT_NOBITS: u32 = 8;
const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(ElfError::Malformed("header out of bounds"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(ElfError::Malformed("header out of bounds"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(ElfError::Malformed("header out of bounds"))
}

fn check_ident(b: &[u8]) -> Result<(), ElfError> {
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return Err(ElfError::NotElf64);
    }
    Ok(())
}

fn to_usize(v: u64) -> Result<usize, ElfError> {
    usize::try_from(v).map_err(|_| ElfError::Malformed("offset too large"))
}

/// The contents of the section called `name`, if present.
pub fn section<'a>(b: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ElfError> {
    check_ident(b)?;
    let shoff = to_usize(u64_at(b, 0x28)?)?;
    let shentsize = u16_at(b, 0x3A)? as usize;
    let shnum = u16_at(b, 0x3C)? as usize;
    let shstrndx = u16_at(b, 0x3E)? as usize;
    if shnum == 0 {
        return Ok(None);
    }
    if shentsize < 64 || shstrndx >= shnum {
        return Err(ElfError::Malformed("section header table"));
    }
    let header = |i: usize| shoff + i * shentsize;
    let data = |i: usize| -> Result<&'a [u8], ElfError> {
        let h = header(i);
        if u32_at(b, h + 4)? == SHT_NOBITS {
            return Ok(&[]);
        }
        let off = to_usize(u64_at(b, h + 24)?)?;
        let size = to_usize(u64_at(b, h + 32)?)?;
        b.get(off..off.saturating_add(size))
            .ok_or(ElfError::Malformed("section out of bounds"))
    };
    let names = data(shstrndx)?;
    for i in 0..shnum {
        let name_off = u32_at(b, header(i))? as usize;
        let sec_name = names
            .get(name_off..)
            .and_then(|s| s.split(|&c| c == 0).next())
            .ok_or(ElfError::Malformed("section name"))?;
        if sec_name == name.as_bytes() {
            return data(i).map(Some);
        }
    }
    Ok(None)
}

/// `key=value` strings of a kernel module's `.modinfo` section.
pub fn modinfo(b: &[u8]) -> Result<Vec<(String, String)>, ElfError> {
    let Some(sec) = section(b, ".modinfo")? else {
        return Ok(Vec::new());
    };
    Ok(sec
        .split(|&c| c == 0)
        .filter_map(|s| std::str::from_utf8(s).ok())
        .filter_map(|s| s.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Whether the executable asks for a dynamic loader (then it cannot run in the bare initramfs).
pub fn is_dynamic(b: &[u8]) -> Result<bool, ElfError> {
    check_ident(b)?;
    let phoff = to_usize(u64_at(b, 0x20)?)?;
    let phentsize = u16_at(b, 0x36)? as usize;
    let phnum = u16_at(b, 0x38)? as usize;
    for i in 0..phnum {
        if u32_at(b, phoff + i * phentsize)? == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Builds a minimal ELF64 file with the given sections (and optionally a PT_INTERP program
/// header), for tests here and in the image builder.
#[cfg(test)]
pub fn fake_elf(sections: &[(&str, &[u8])], dynamic: bool) -> Vec<u8> {
    let mut shstr = vec![0u8];
    let mut name_offs = Vec::new();
    for (name, _) in sections {
        name_offs.push(shstr.len() as u32);
        shstr.extend_from_slice(name.as_bytes());
        shstr.push(0);
    }
    let shstr_name = shstr.len() as u32;
    shstr.extend_from_slice(b".shstrtab\0");

    let mut out = vec![0u8; 64];
    out[..6].copy_from_slice(b"\x7fELF\x02\x01");
    if dynamic {
        out[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        out[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        out[0x38..0x3A].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[..4].copy_from_slice(&PT_INTERP.to_le_bytes());
        out.extend_from_slice(&ph);
    }
    let mut offs = Vec::new();
    for (_, data) in sections {
        offs.push(out.len() as u64);
        out.extend_from_slice(data);
    }
    let shstr_off = out.len() as u64;
    out.extend_from_slice(&shstr);
    let shoff = out.len() as u64;
    let mut sh = |name: u32, off: u64, size: u64| {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&1u32.to_le_bytes());
        h[24..32].copy_from_slice(&off.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&h);
    };
    sh(0, 0, 0);
    for (i, (_, data)) in sections.iter().enumerate() {
        sh(name_offs[i], offs[i], data.len() as u64);
    }
    sh(shstr_name, shstr_off, shstr.len() as u64);
    let shnum = sections.len() as u16 + 2;
    out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
    out[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
    out[0x3C..0x3E].copy_from_slice(&shnum.to_le_bytes());
    out[0x3E..0x40].copy_from_slice(&(shnum - 1).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_modinfo() {
        let elf = fake_elf(
            &[
                (".text", b"\x90\x90"),
                (
                    ".modinfo",
                    b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_net\0",
                ),
            ],
            false,
        );
        let info = modinfo(&elf).unwrap();
        assert!(info.contains(&("depends".into(), "virtio,virtio_ring".into())));
        assert!(info.contains(&("name".into(), "virtio_net".into())));
        assert_eq!(section(&elf, ".text").unwrap(), Some(&b"\x90\x90"[..]));
        assert_eq!(section(&elf, ".nope").unwrap(), None);
        assert!(!is_dynamic(&elf).unwrap());
    }

    #[test]
    fn detects_dynamic() {
        assert!(is_dynamic(&fake_elf(&[], true)).unwrap());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(modinfo(b"#!/bin/sh\n"), Err(ElfError::NotElf64));
        let mut elf = fake_elf(&[(".modinfo", b"a=b\0")], false);
        elf.truncate(elf.len() - 40);
        assert!(matches!(modinfo(&elf), Err(ElfError::Malformed(_))));
    }
}
