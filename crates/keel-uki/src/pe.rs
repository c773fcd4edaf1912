//! The parts of PE/COFF a UKI needs: read an image's headers and sections (through the
//! `object` crate's reader), append sections to the EFI stub, and the image checksum.

use anyhow::{bail, ensure, Context};
use object::pe::{
    ImageDosHeader, ImageNtHeaders64, ImageSectionHeader, IMAGE_DIRECTORY_ENTRY_SECURITY, IMAGE_FILE_MACHINE_AMD64, IMAGE_SCN_CNT_INITIALIZED_DATA,
    IMAGE_SCN_MEM_READ, IMAGE_SIZEOF_SECTION_HEADER, IMAGE_SUBSYSTEM_EFI_APPLICATION,
};
use object::pod::bytes_of;
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
use object::LittleEndian as LE;
use sha2::{Digest, Sha256};
use std::mem::size_of;

/// New sections start on a page, whatever the stub's own section alignment: the stub
/// hands the kernel and initrd to Linux from where the firmware loaded them.
const PAGE: u64 = 4096;
/// The PE/COFF specification's bounds on FileAlignment: a power of two from 512 to 64 KiB.
const FILE_ALIGNMENTS: std::ops::RangeInclusive<u64> = 512..=65536;
/// The parts systemd's stub looks up in a UKI. It takes a section whose name *starts* with
/// one of these (`.initrdX` is an `.initrd` to it), and of several such, the last.
pub const STUB_PARTS: [&str; 9] = [".osrel", ".cmdline", ".linux", ".initrd", ".splash", ".dtb", ".uname", ".pcrsig", ".pcrpkey"];
/// Where CheckSum sits in the optional header (the same in PE32 and PE32+).
const CHECKSUM_IN_OPTIONAL_HEADER: usize = 64;
/// The signature, magic and file header before the optional header.
const BEFORE_OPTIONAL_HEADER: usize = 24;

/// What `keel uki inspect` shows of one section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    /// The section's name, with bytes that are not printable ASCII shown as `\xNN`.
    pub name: String,
    pub file_offset: u32,
    /// Bytes of file the section takes (SizeOfRawData, padded to the file alignment).
    pub file_size: u32,
    pub virtual_address: u32,
    pub virtual_size: u32,
    /// The bytes the section holds: its VirtualSize, but no more than its raw data.
    pub content: std::ops::Range<usize>,
    /// The SHA-256 of those bytes.
    pub sha256: [u8; 32],
}

/// An image's sections and its Authenticode signature table, as read from its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    pub sections: Vec<Section>,
    /// The file offset and size of the attribute certificate table (the signatures sbsign
    /// appends), when the image has one.
    pub signature_table: Option<(u32, u32)>,
    /// Whether the header's CheckSum matches the file (0 means "not set" to firmware).
    pub checksum: u32,
    pub checksum_matches: bool,
}

impl Inspection {
    /// Each part the stub would find in more than one section, with those sections' names
    /// in table order: the stub reads the last, whatever a reader of the first believes.
    pub fn ambiguous_parts(&self) -> Vec<(&'static str, Vec<&str>)> {
        STUB_PARTS
            .iter()
            .map(|part| (*part, self.sections.iter().map(|s| s.name.as_str()).filter(|name| name.starts_with(part)).collect::<Vec<_>>()))
            .filter(|(_, names)| names.len() > 1)
            .collect()
    }
}

/// An image's headers: owned copies, so a new image can be written from them.
struct Headers {
    nt_offset: usize,
    nt: ImageNtHeaders64,
    section_table_offset: usize,
    sections: Vec<ImageSectionHeader>,
    signature_table: Option<(u32, u32)>,
}

fn parse(data: &[u8]) -> anyhow::Result<Headers> {
    let dos = ImageDosHeader::parse(data).map_err(|e| anyhow::anyhow!("not a PE image: {e}"))?;
    let nt_offset = dos.nt_headers_offset() as usize;
    let mut offset = nt_offset as u64;
    let (nt, directories) = ImageNtHeaders64::parse(data, &mut offset).map_err(|e| anyhow::anyhow!("not a 64-bit PE image: {e}"))?;
    let section_table_offset = usize::try_from(offset).context("the section table is beyond memory")?;
    let table = nt.sections(data, offset).map_err(|e| anyhow::anyhow!("cannot read the section table: {e}"))?;
    let signature_table = directories
        .get(IMAGE_DIRECTORY_ENTRY_SECURITY)
        .map(|entry| (entry.virtual_address.get(LE), entry.size.get(LE)))
        .filter(|&(_, size)| size > 0);
    Ok(Headers { nt_offset, nt: *nt, section_table_offset, sections: table.iter().copied().collect(), signature_table })
}

fn section_name(header: &ImageSectionHeader) -> String {
    let name = header.name.split(|&b| b == 0).next().unwrap_or_default();
    name.iter().map(|&b| if b.is_ascii_graphic() { char::from(b).to_string() } else { format!("\\x{b:02x}") }).collect()
}

/// The file bytes a section's header says it holds, checked against the file.
fn section_bytes(data: &[u8], header: &ImageSectionHeader) -> anyhow::Result<std::ops::Range<usize>> {
    let start = header.pointer_to_raw_data.get(LE) as usize;
    let raw = header.size_of_raw_data.get(LE) as usize;
    let virtual_size = header.virtual_size.get(LE) as usize;
    let len = if virtual_size == 0 { raw } else { virtual_size.min(raw) };
    let end = start.checked_add(len).filter(|&end| end <= data.len());
    match end {
        Some(end) if raw == 0 || start.checked_add(raw).is_some_and(|raw_end| raw_end <= data.len()) => Ok(start..end),
        _ => bail!("section {} claims bytes {start}..{} of a {}-byte file", section_name(header), start.saturating_add(raw), data.len()),
    }
}

/// Reads an image's sections, each with the SHA-256 of its content, and its signature table.
pub fn inspect(data: &[u8]) -> anyhow::Result<Inspection> {
    let headers = parse(data)?;
    let mut sections = Vec::with_capacity(headers.sections.len());
    for header in &headers.sections {
        let content = section_bytes(data, header)?;
        let sha256 = Sha256::digest(data.get(content.clone()).unwrap_or_default()).into();
        sections.push(Section {
            name: section_name(header),
            file_offset: header.pointer_to_raw_data.get(LE),
            file_size: header.size_of_raw_data.get(LE),
            virtual_address: header.virtual_address.get(LE),
            virtual_size: header.virtual_size.get(LE),
            content,
            sha256,
        });
    }
    let checksum = headers.nt.optional_header.check_sum.get(LE);
    let checksum_offset = headers.nt_offset + BEFORE_OPTIONAL_HEADER + CHECKSUM_IN_OPTIONAL_HEADER;
    Ok(Inspection {
        sections,
        signature_table: headers.signature_table,
        checksum,
        checksum_matches: checksum == image_checksum(data, checksum_offset),
    })
}

fn align_up(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

fn to_u32(value: u64, what: &str) -> anyhow::Result<u32> {
    u32::try_from(value).map_err(|_| anyhow::anyhow!("{what} ({value}) is beyond what a PE image can address (4 GiB)"))
}

/// `stub` with `sections` (name, content) appended, in that order, each readable
/// initialized data at the next page after everything the stub occupies. The stub's COFF
/// symbol table, which images do not use, is dropped, so that every byte after the
/// headers belongs to a section: Authenticode signs the headers and the sections, and
/// the loader reads nothing else.
pub fn append_sections(stub: &[u8], sections: &[(&str, &[u8])]) -> anyhow::Result<Vec<u8>> {
    let mut headers = parse(stub)?;
    let optional = headers.nt.optional_header;
    let machine = headers.nt.file_header.machine.get(LE);
    ensure!(machine == IMAGE_FILE_MACHINE_AMD64, "the stub is for machine {machine:#06x}, not x86-64");
    ensure!(optional.subsystem.get(LE) == IMAGE_SUBSYSTEM_EFI_APPLICATION, "the stub is not an EFI application");
    ensure!(
        headers.signature_table.is_none(),
        "the stub is signed: its signature would not cover the added sections (give keel the unsigned stub; the UKI is signed whole)"
    );
    let file_alignment = u64::from(optional.file_alignment());
    let section_alignment = u64::from(optional.section_alignment());
    ensure!(
        file_alignment.is_power_of_two() && FILE_ALIGNMENTS.contains(&file_alignment),
        "the stub's file alignment ({file_alignment}) is not a power of two from 512 to 65536"
    );
    ensure!(
        section_alignment.is_power_of_two() && section_alignment >= file_alignment && section_alignment <= PAGE << 8,
        "the stub's section alignment ({section_alignment}) is not a power of two from its file alignment to 1 MiB"
    );
    for (name, _) in sections {
        ensure!(name.len() <= 8, "a section name has at most 8 bytes: {name}");
        // By the stub's own rule: a section whose name starts with ours would be read too.
        if let Some(header) = headers.sections.iter().find(|header| section_name(header).starts_with(name)) {
            bail!("the stub already has a {name} section ({})", section_name(header));
        }
    }

    let count = headers.sections.len() + sections.len();
    let table_end = headers.section_table_offset + count * IMAGE_SIZEOF_SECTION_HEADER;
    let mut sections_end = optional.size_of_headers() as usize;
    let mut first_section_data = stub.len();
    let mut virtual_end = u64::from(optional.size_of_image());
    for header in &headers.sections {
        let range = section_bytes(stub, header)?;
        let raw = header.size_of_raw_data.get(LE) as usize;
        if raw > 0 {
            first_section_data = first_section_data.min(range.start);
            sections_end = sections_end.max(range.start + raw);
        }
        let extent = header.virtual_size.get(LE).max(header.size_of_raw_data.get(LE));
        virtual_end = virtual_end.max(u64::from(header.virtual_address.get(LE)) + u64::from(extent));
    }
    ensure!(
        table_end <= optional.size_of_headers() as usize && table_end <= first_section_data,
        "the stub's headers have no room for {} more section headers",
        sections.len()
    );

    let mut image = stub.get(..sections_end).context("the stub's sections end beyond the file")?.to_vec();
    let mut virtual_address = align_up(virtual_end, PAGE.max(section_alignment));
    let mut initialized = u64::from(optional.size_of_initialized_data());
    for (name, content) in sections {
        image.resize(align_up(image.len() as u64, file_alignment) as usize, 0);
        let raw_size = align_up(content.len() as u64, file_alignment);
        let mut header = ImageSectionHeader {
            name: [0; 8],
            virtual_size: object::U32::new(LE, to_u32(content.len() as u64, name)?),
            virtual_address: object::U32::new(LE, to_u32(virtual_address, "the image's end")?),
            size_of_raw_data: object::U32::new(LE, to_u32(raw_size, name)?),
            pointer_to_raw_data: object::U32::new(LE, to_u32(image.len() as u64, "the image's size")?),
            pointer_to_relocations: object::U32::new(LE, 0),
            pointer_to_linenumbers: object::U32::new(LE, 0),
            number_of_relocations: object::U16::new(LE, 0),
            number_of_linenumbers: object::U16::new(LE, 0),
            characteristics: object::U32::new(LE, IMAGE_SCN_CNT_INITIALIZED_DATA | IMAGE_SCN_MEM_READ),
        };
        header.name[..name.len()].copy_from_slice(name.as_bytes());
        image.extend_from_slice(content);
        image.resize(image.len() + (raw_size as usize - content.len()), 0);
        initialized += raw_size;
        virtual_end = virtual_address + content.len() as u64;
        virtual_address = align_up(virtual_end, PAGE.max(section_alignment));
        headers.sections.push(header);
    }
    to_u32(image.len() as u64, "the image's size")?;

    let nt = &mut headers.nt;
    nt.file_header.number_of_sections.set(LE, u16::try_from(count).context("too many sections")?);
    nt.file_header.pointer_to_symbol_table.set(LE, 0);
    nt.file_header.number_of_symbols.set(LE, 0);
    nt.optional_header.size_of_initialized_data.set(LE, to_u32(initialized, "the initialized data")?);
    nt.optional_header.size_of_image.set(LE, to_u32(align_up(virtual_end, section_alignment), "the image's memory size")?);
    nt.optional_header.check_sum.set(LE, 0);
    put(&mut image, headers.nt_offset, bytes_of(&headers.nt))?;
    for (index, header) in headers.sections.iter().enumerate() {
        put(&mut image, headers.section_table_offset + index * size_of::<ImageSectionHeader>(), bytes_of(header))?;
    }
    let checksum_offset = headers.nt_offset + BEFORE_OPTIONAL_HEADER + CHECKSUM_IN_OPTIONAL_HEADER;
    let checksum = image_checksum(&image, checksum_offset);
    put(&mut image, checksum_offset, &checksum.to_le_bytes())?;
    Ok(image)
}

/// Writes `bytes` over `image` at `at`, which the headers' checks keep inside it.
fn put(image: &mut [u8], at: usize, bytes: &[u8]) -> anyhow::Result<()> {
    let target = image.get_mut(at..at + bytes.len()).context("a header lies beyond the stub's headers")?;
    target.copy_from_slice(bytes);
    Ok(())
}

/// The PE image checksum (what Windows' CheckSumMappedFile computes): the 16-bit
/// one's-complement sum of the file's little-endian words, CheckSum's own four bytes
/// read as zero, plus the file's length.
pub fn image_checksum(data: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (index, pair) in data.chunks(2).enumerate() {
        let at = index * 2;
        if at >= checksum_offset && at < checksum_offset + 4 {
            continue;
        }
        let word = u16::from_le_bytes([pair.first().copied().unwrap_or(0), pair.get(1).copied().unwrap_or(0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ((sum & 0xffff) as u32).wrapping_add(data.len() as u32)
}
