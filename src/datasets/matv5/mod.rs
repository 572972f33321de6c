//! Reading (and, for tests and fixtures, writing) MATLAB v5 MAT-files natively, with no Python.
//!
//! This module owns the MAT-file v5 container format as used by SIDD's validation and benchmark
//! sets (`ValidationNoisyBlocksSrgb.mat`, `ValidationGtBlocksSrgb.mat`,
//! `BenchmarkNoisyBlocksSrgb.mat`: one `uint8` variable named after the file stem, of shape
//! (40, 32, 256, 256, 3) = images × blocks × rows × columns × RGB), and turning such a block array
//! into images ([`super::sidd::blocks`]). MATLAB v7.3 files (HDF5) and v4 files are detected and
//! refused with a clear error.
//!
//! Format facts relied on (MathWorks, "MAT-File Format", v5/v7 level-5 files):
//!
//! * A 128-byte header: 116 bytes of descriptive text, an 8-byte subsystem-data offset (all zeros
//!   or all spaces when absent), a 2-byte version (0x0100) and a 2-byte endian indicator. The
//!   indicator is the characters "MI" written as a 16-bit integer by the writing machine, so a
//!   little-endian file holds the bytes `I`,`M` and a big-endian one `M`,`I`. Every multi-byte
//!   number after it (tags, dimensions, data) is in that byte order.
//! * Then data elements, each an 8-byte tag (data type `u32`, byte count `u32`) followed by its
//!   data. Inside a matrix, each sub-element's data is padded to a multiple of 8 bytes. A *small
//!   data element* (≤ 4 bytes of data) packs everything into 8 bytes: the first tag word, read as a
//!   `u32` in the file's byte order, holds the byte count in its upper 16 bits and the type in its
//!   lower 16, and the data fills the next 4 bytes.
//! * Top-level elements are `miMATRIX` (14) or `miCOMPRESSED` (15). A compressed element holds a
//!   zlib stream that inflates to exactly one `miMATRIX` element (tag included). Top-level
//!   elements are not padded: MATLAB and scipy write compressed elements back to back at
//!   unaligned offsets (the reader also tolerates writers that zero-pad them to 8 bytes).
//! * An `miMATRIX` element holds, in order: array flags (`miUINT32` × 2: class in the low byte of
//!   the first word, bit 0x0800 complex, 0x0400 global, 0x0200 logical; the second word is
//!   sparse `nzmax`), dimensions (`miINT32`, at least 2), the array name (`miINT8`, often a small
//!   element), the real part, and the imaginary part if complex. The real part may be stored in
//!   a narrower type than the class (MATLAB saves a `double` array of small integers as
//!   `miUINT8`); values are converted to the class's type. Data is column-major (first dimension
//!   fastest) and is kept that way in [`MatArray::data`].
//! * Cells, structs, objects, chars, sparse, function handles and opaque (`mxOPAQUE`) values are
//!   skipped, not failed on; complex arrays are skipped by [`read_mat`] and refused by
//!   [`read_variable`]. Skips are reported in [`MatContents::skipped`]. The element the header's
//!   subsystem offset points at (MATLAB's hidden object store) is skipped too.
//!
//! Large arrays are streamed: compressed elements are inflated straight from the file into a
//! vector sized from the dimensions (the `uint8` real part becomes [`MatData::U8`] with no
//! further copy), and [`read_variable`] inflates only the few header bytes of the variables it
//! passes over. Malformed input gives errors naming the file and the problem; nothing panics.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use flate2::read::ZlibDecoder;

mod write;

pub use write::{write_mat, write_mat_bytes};

// ------------------------------------------------------------------------------------------------
// Public types

/// Numeric class of a MATLAB array (`mxDOUBLE_CLASS` …). Logical arrays are class `UInt8` with
/// [`MatArray::logical`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatClass {
    Double,
    Single,
    Int8,
    UInt8,
    Int16,
    UInt16,
    Int32,
    UInt32,
    Int64,
    UInt64,
}

impl MatClass {
    /// MATLAB's name for the class (`"double"`, `"uint8"`, …).
    pub fn name(self) -> &'static str {
        match self {
            MatClass::Double => "double",
            MatClass::Single => "single",
            MatClass::Int8 => "int8",
            MatClass::UInt8 => "uint8",
            MatClass::Int16 => "int16",
            MatClass::UInt16 => "uint16",
            MatClass::Int32 => "int32",
            MatClass::UInt32 => "uint32",
            MatClass::Int64 => "int64",
            MatClass::UInt64 => "uint64",
        }
    }

    /// The `mxCLASS` code stored in the array flags.
    pub fn code(self) -> u8 {
        match self {
            MatClass::Double => MX_DOUBLE,
            MatClass::Single => 7,
            MatClass::Int8 => 8,
            MatClass::UInt8 => 9,
            MatClass::Int16 => 10,
            MatClass::UInt16 => 11,
            MatClass::Int32 => 12,
            MatClass::UInt32 => 13,
            MatClass::Int64 => 14,
            MatClass::UInt64 => 15,
        }
    }

    fn from_code(code: u8) -> Option<MatClass> {
        Some(match code {
            6 => MatClass::Double,
            7 => MatClass::Single,
            8 => MatClass::Int8,
            9 => MatClass::UInt8,
            10 => MatClass::Int16,
            11 => MatClass::UInt16,
            12 => MatClass::Int32,
            13 => MatClass::UInt32,
            14 => MatClass::Int64,
            15 => MatClass::UInt64,
            _ => return None,
        })
    }

    /// The data type MATLAB uses to store this class at full width.
    fn mi_type(self) -> u32 {
        match self {
            MatClass::Double => MI_DOUBLE,
            MatClass::Single => MI_SINGLE,
            MatClass::Int8 => MI_INT8,
            MatClass::UInt8 => MI_UINT8,
            MatClass::Int16 => MI_INT16,
            MatClass::UInt16 => MI_UINT16,
            MatClass::Int32 => MI_INT32,
            MatClass::UInt32 => MI_UINT32,
            MatClass::Int64 => MI_INT64,
            MatClass::UInt64 => MI_UINT64,
        }
    }
}

impl fmt::Display for MatClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The real part of a numeric array, converted to its class's type, column-major as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum MatData {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl MatData {
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::I8(v) => v.len(),
            MatData::U16(v) => v.len(),
            MatData::I16(v) => v.len(),
            MatData::U32(v) => v.len(),
            MatData::I32(v) => v.len(),
            MatData::U64(v) => v.len(),
            MatData::I64(v) => v.len(),
            MatData::F32(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The MATLAB class this data is written as by [`write_mat`].
    pub(crate) fn class(&self) -> MatClass {
        match self {
            MatData::U8(_) => MatClass::UInt8,
            MatData::I8(_) => MatClass::Int8,
            MatData::U16(_) => MatClass::UInt16,
            MatData::I16(_) => MatClass::Int16,
            MatData::U32(_) => MatClass::UInt32,
            MatData::I32(_) => MatClass::Int32,
            MatData::U64(_) => MatClass::UInt64,
            MatData::I64(_) => MatClass::Int64,
            MatData::F32(_) => MatClass::Single,
            MatData::F64(_) => MatClass::Double,
        }
    }

    /// Element `i` as `f64` (exact except for 64-bit integers above 2^53).
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        Some(match self {
            MatData::U8(v) => *v.get(i)? as f64,
            MatData::I8(v) => *v.get(i)? as f64,
            MatData::U16(v) => *v.get(i)? as f64,
            MatData::I16(v) => *v.get(i)? as f64,
            MatData::U32(v) => *v.get(i)? as f64,
            MatData::I32(v) => *v.get(i)? as f64,
            MatData::U64(v) => *v.get(i)? as f64,
            MatData::I64(v) => *v.get(i)? as f64,
            MatData::F32(v) => *v.get(i)? as f64,
            MatData::F64(v) => *v.get(i)?,
        })
    }
}

/// One numeric, real, top-level variable of a MAT-file.
#[derive(Clone, Debug, PartialEq)]
pub struct MatArray {
    pub name: String,
    /// Dimensions in MATLAB order (at least 2; MATLAB drops trailing singleton dimensions).
    pub dims: Vec<usize>,
    pub class: MatClass,
    /// MATLAB `logical` array (class `uint8`).
    pub logical: bool,
    /// Column-major (first dimension fastest), exactly as stored.
    pub data: MatData,
}

impl MatArray {
    /// Number of elements (product of `dims`).
    pub(crate) fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Linear (column-major) position of the element at the 0-based subscript `sub`, or `None` if
    /// `sub` has the wrong length or is out of range.
    pub fn linear_index(&self, sub: &[usize]) -> Option<usize> {
        if sub.len() != self.dims.len() {
            return None;
        }
        let mut idx = 0usize;
        let mut stride = 1usize;
        for (&s, &d) in sub.iter().zip(&self.dims) {
            if s >= d {
                return None;
            }
            idx += s * stride;
            stride *= d;
        }
        Some(idx)
    }

    pub(crate) fn as_u8(&self) -> Option<&[u8]> {
        match &self.data {
            MatData::U8(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            MatData::F64(v) => Some(v),
            _ => None,
        }
    }
}

/// What a file holds at top level, as listed by [`list_variables`] and in error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VarInfo {
    pub name: String,
    /// MATLAB class name (`"double"`, `"cell"`, `"char"`, `"sparse"`, …).
    pub class: &'static str,
    pub dims: Vec<usize>,
    pub complex: bool,
    pub compressed: bool,
}

impl fmt::Display for VarInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.dims.iter().map(|d| d.to_string()).collect();
        write!(f, "{} ({}{} {})", self.name, if self.complex { "complex " } else { "" }, self.class, dims.join("x"))
    }
}

/// A top-level variable [`read_mat`] passed over, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub var: VarInfo,
    pub reason: String,
}

/// Everything [`read_mat_contents`] found: the numeric arrays plus a note for each variable skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct MatContents {
    pub arrays: Vec<MatArray>,
    pub skipped: Vec<Skipped>,
}

// ------------------------------------------------------------------------------------------------
// Public reading API

/// Every real numeric array at the top level of the MAT-file at `path`, in file order. Cells,
/// structs, chars, sparse, objects and complex arrays are skipped (see [`read_mat_contents`] for
/// the list of what was skipped and why).
pub fn read_mat(path: &Path) -> Result<Vec<MatArray>> {
    Ok(read_mat_contents(path)?.arrays)
}

/// Like [`read_mat`], also returning a note for every variable skipped.
pub fn read_mat_contents(path: &Path) -> Result<MatContents> {
    let (reader, len) = open(path)?;
    contents_of(reader, len, &path.display().to_string())
}

/// [`read_mat`] over an in-memory file; `what` names it in error messages.
pub fn read_mat_bytes(bytes: &[u8], what: &str) -> Result<Vec<MatArray>> {
    Ok(read_mat_bytes_contents(bytes, what)?.arrays)
}

/// [`read_mat_contents`] over an in-memory file; `what` names it in error messages.
pub fn read_mat_bytes_contents(bytes: &[u8], what: &str) -> Result<MatContents> {
    contents_of(bytes, bytes.len() as u64, what)
}

fn contents_of<R: Read>(reader: R, len: u64, what: &str) -> Result<MatContents> {
    let mut arrays = Vec::new();
    let mut skipped = Vec::new();
    walk(reader, len, what, &mut |_| Visit::Read, &mut |ev| {
        match ev {
            Event::Array(a) => arrays.push(a),
            Event::Skipped(s) => skipped.push(s),
            Event::Seen(_) => {}
        }
        true
    })?;
    Ok(MatContents { arrays, skipped })
}

/// Name, class and shape of every top-level variable, without reading (or inflating) their data.
pub fn list_variables(path: &Path) -> Result<Vec<VarInfo>> {
    let (reader, len) = open(path)?;
    let mut vars = Vec::new();
    walk(reader, len, &path.display().to_string(), &mut |_| Visit::Skip, &mut |ev| {
        if let Event::Seen(v) = ev {
            vars.push(v);
        }
        true
    })?;
    Ok(vars)
}

/// The numeric variable `name` of the MAT-file at `path`. Only that variable's data is read; the
/// error for a missing variable names the file, the wanted variable and the variables present.
pub fn read_variable(path: &Path, name: &str) -> Result<MatArray> {
    let (reader, len) = open(path)?;
    read_variable_from(reader, len, &path.display().to_string(), name)
}

/// [`read_variable`] over an in-memory file; `what` names it in error messages.
pub fn read_variable_bytes(bytes: &[u8], what: &str, name: &str) -> Result<MatArray> {
    read_variable_from(bytes, bytes.len() as u64, what, name)
}

fn read_variable_from<R: Read>(reader: R, len: u64, what: &str, name: &str) -> Result<MatArray> {
    let mut found: Option<MatArray> = None;
    let mut refused: Option<Skipped> = None;
    let mut present: Vec<VarInfo> = Vec::new();
    walk(reader, len, what, &mut |v| if v.name == name { Visit::Read } else { Visit::Skip }, &mut |ev| match ev {
        Event::Array(a) => {
            found = Some(a);
            false
        }
        Event::Skipped(s) => {
            let stop = s.var.name == name;
            if stop {
                refused = Some(s);
            }
            !stop
        }
        Event::Seen(v) => {
            present.push(v);
            true
        }
    })?;
    if let Some(a) = found {
        return Ok(a);
    }
    if let Some(s) = refused {
        bail!("{what}: variable '{name}' is {}, which is not supported: {}", s.var, s.reason);
    }
    let list: Vec<String> = present.iter().map(|v| v.to_string()).collect();
    bail!(
        "{what}: no variable named '{name}'; the file holds {}",
        if list.is_empty() { "no variables".to_string() } else { list.join(", ") }
    )
}

fn open(path: &Path) -> Result<(BufReader<File>, u64)> {
    let file = File::open(path).with_context(|| format!("{}: cannot open MAT-file", path.display()))?;
    let len = file.metadata().with_context(|| format!("{}: cannot stat MAT-file", path.display()))?.len();
    Ok((BufReader::with_capacity(1 << 16, file), len))
}

// ------------------------------------------------------------------------------------------------
// Format constants

const HEADER_LEN: u64 = 128;
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_DOUBLE: u8 = 6;
const MX_SPARSE: u8 = 5;
const MX_OPAQUE: u8 = 17;
const FLAG_COMPLEX: u32 = 0x0800;
const FLAG_LOGICAL: u32 = 0x0200;

/// DEFLATE cannot expand more than ~1032:1; a compressed element claiming more is corrupt.
const MAX_INFLATE_RATIO: u64 = 1032;

fn mi_name(t: u32) -> &'static str {
    match t {
        MI_INT8 => "miINT8",
        MI_UINT8 => "miUINT8",
        MI_INT16 => "miINT16",
        MI_UINT16 => "miUINT16",
        MI_INT32 => "miINT32",
        MI_UINT32 => "miUINT32",
        MI_SINGLE => "miSINGLE",
        MI_DOUBLE => "miDOUBLE",
        MI_INT64 => "miINT64",
        MI_UINT64 => "miUINT64",
        MI_MATRIX => "miMATRIX",
        MI_COMPRESSED => "miCOMPRESSED",
        MI_UTF8 => "miUTF8",
        MI_UTF16 => "miUTF16",
        MI_UTF32 => "miUTF32",
        _ => "unknown",
    }
}

/// Size in bytes of one element of a numeric data type.
fn mi_size(t: u32) -> Option<usize> {
    Some(match t {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

fn class_name(code: u8) -> &'static str {
    match MatClass::from_code(code) {
        Some(c) => c.name(),
        None => match code {
            1 => "cell",
            2 => "struct",
            3 => "object",
            4 => "char",
            5 => "sparse",
            16 => "function handle",
            17 => "opaque object",
            _ => "unknown class",
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endian {
    Little,
    Big,
}

impl Endian {
    fn u16(self, b: [u8; 2]) -> u16 {
        match self {
            Endian::Little => u16::from_le_bytes(b),
            Endian::Big => u16::from_be_bytes(b),
        }
    }
    fn u32(self, b: [u8; 4]) -> u32 {
        match self {
            Endian::Little => u32::from_le_bytes(b),
            Endian::Big => u32::from_be_bytes(b),
        }
    }
    fn u64(self, b: [u8; 8]) -> u64 {
        match self {
            Endian::Little => u64::from_le_bytes(b),
            Endian::Big => u64::from_be_bytes(b),
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Reader

/// Counts bytes consumed from the file, for offsets in messages and top-level bookkeeping.
struct Counted<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

enum Visit {
    Read,
    Skip,
}

enum Event {
    /// Every top-level variable, before its data is read or skipped.
    Seen(VarInfo),
    Array(MatArray),
    Skipped(Skipped),
}

/// Parsed start of an `miMATRIX` element: everything up to (not including) the real part.
struct MatrixHeader {
    class_code: u8,
    flags: u32,
    dims: Vec<usize>,
    name: String,
}

impl MatrixHeader {
    fn info(&self, compressed: bool) -> VarInfo {
        VarInfo {
            name: self.name.clone(),
            class: class_name(self.class_code),
            dims: self.dims.clone(),
            complex: self.flags & FLAG_COMPLEX != 0,
            compressed,
        }
    }

    /// Why this variable is not returned as a [`MatArray`], if it is not.
    fn unsupported(&self) -> Option<String> {
        let class = MatClass::from_code(self.class_code);
        if class.is_none() {
            return Some(match self.class_code {
                MX_SPARSE => "sparse matrices are not supported".into(),
                1..=5 | 16 | MX_OPAQUE => format!("{} variables are not numeric arrays", class_name(self.class_code)),
                c => format!("unknown array class {c}"),
            });
        }
        if self.flags & FLAG_COMPLEX != 0 {
            return Some("complex arrays are not supported".into());
        }
        None
    }
}

/// Walks the top-level elements of a MAT-file. `visit` decides, per variable, whether its data is
/// read; `on` receives the events and returns `false` to stop early.
fn walk<R: Read>(
    reader: R,
    len: u64,
    what: &str,
    visit: &mut dyn FnMut(&VarInfo) -> Visit,
    on: &mut dyn FnMut(Event) -> bool,
) -> Result<()> {
    let mut r = Counted { inner: reader, pos: 0 };
    let mut header = [0u8; HEADER_LEN as usize];
    let got = read_full(&mut r, &mut header).with_context(|| format!("{what}: cannot read the MAT-file header"))?;
    let endian = parse_header(&header[..got], what)?;
    let subsys = endian.u64(header[116..124].try_into().unwrap_or([0; 8]));
    let subsys = if subsys == 0 || subsys == 0x2020_2020_2020_2020 { None } else { Some(subsys) };

    let mut index = 0usize;
    loop {
        // Next top-level tag; tolerate trailing zero padding and zero-padded compressed elements.
        let start = r.pos;
        let mut tag = [0u8; 8];
        let got = read_full(&mut r, &mut tag).with_context(|| format!("{what}: read error at offset {start}"))?;
        if got == 0 || (got < 8 && tag[..got].iter().all(|&b| b == 0)) {
            return Ok(());
        }
        ensure!(
            got == 8,
            "{what}: truncated file: {got} stray bytes at offset {start} where a data element tag should be"
        );
        let mut start = start;
        let mut ty = endian.u32(tag[0..4].try_into().unwrap_or_default());
        let pad = ((8 - start % 8) % 8) as usize;
        if ty != MI_MATRIX && ty != MI_COMPRESSED && pad > 0 && tag[..pad].iter().all(|&b| b == 0) {
            // A writer that 8-byte aligned the previous element: the tag starts `pad` bytes on.
            let mut shifted = [0u8; 8];
            shifted[..8 - pad].copy_from_slice(&tag[pad..]);
            let got2 = read_full(&mut r, &mut shifted[8 - pad..])
                .with_context(|| format!("{what}: read error at offset {}", start + 8))?;
            if got2 == 0 && shifted[..8 - pad].iter().all(|&b| b == 0) {
                return Ok(());
            }
            ensure!(
                got2 == pad,
                "{what}: truncated file: data element tag at offset {} is cut off",
                start + pad as u64
            );
            tag = shifted;
            start += pad as u64;
            ty = endian.u32(tag[0..4].try_into().unwrap_or_default());
        }
        let first = endian.u32(tag[0..4].try_into().unwrap_or_default());
        if first >> 16 != 0 {
            bail!(
                "{what}: unexpected small data element (type {}) at top level, offset {start}; \
                 expected miMATRIX or miCOMPRESSED",
                first & 0xFFFF
            );
        }
        let nbytes = endian.u32(tag[4..8].try_into().unwrap_or_default()) as u64;
        let body = start + 8;
        ensure!(
            body + nbytes <= len,
            "{what}: truncated file: the {} element at offset {start} claims {nbytes} bytes but only {} remain",
            mi_name(ty),
            len.saturating_sub(body)
        );
        let is_subsys = subsys == Some(start);
        let whole = (&mut r).take(nbytes);
        let keep_going = match ty {
            MI_MATRIX => {
                let mut el = whole;
                let (kg, _) = top_matrix(&mut el, nbytes, endian, what, start, false, is_subsys, index, visit, on)?;
                skip(&mut el)
                    .with_context(|| format!("{what}: truncated file inside the element at offset {start}"))?;
                kg
            }
            MI_COMPRESSED => {
                let mut z = ZlibDecoder::new(whole);
                let mut inner = [0u8; 8];
                let got = read_full(&mut z, &mut inner).map_err(|e| inflate_error(what, start, e))?;
                ensure!(
                    got == 8,
                    "{what}: truncated or corrupt file: the compressed element at offset {start} inflates to only \
                     {got} bytes"
                );
                let ity = endian.u32(inner[0..4].try_into().unwrap_or_default());
                let inb = endian.u32(inner[4..8].try_into().unwrap_or_default()) as u64;
                ensure!(
                    ity == MI_MATRIX,
                    "{what}: compressed element at offset {start} holds a {} element (type {ity}), expected miMATRIX",
                    mi_name(ity)
                );
                ensure!(
                    inb <= nbytes.saturating_mul(MAX_INFLATE_RATIO) + 1024,
                    "{what}: compressed element at offset {start} claims to inflate to {inb} bytes, more than \
                     {nbytes} compressed bytes can hold (corrupt file)"
                );
                let mut el = (&mut z).take(inb);
                let (kg, read_data) = top_matrix(&mut el, inb, endian, what, start, true, is_subsys, index, visit, on)?;
                if read_data {
                    // Inflate to the end of the zlib stream so its Adler-32 checksum is verified.
                    let mut sink = [0u8; 256];
                    loop {
                        match z.read(&mut sink) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => return Err(inflate_error(what, start, e)),
                        }
                    }
                }
                // Whatever compressed bytes were not inflated (skipped data) are passed over raw.
                let mut rest = z.into_inner();
                skip(&mut rest)
                    .with_context(|| format!("{what}: truncated file inside the element at offset {start}"))?;
                kg
            }
            t if (1..=MI_UTF32).contains(&t) => bail!(
                "{what}: unexpected {} data element at top level, offset {start}; expected miMATRIX or miCOMPRESSED",
                mi_name(t)
            ),
            t => bail!("{what}: unknown data element type {t} at offset {start} (corrupt or not a MAT-file)"),
        };
        index += 1;
        if !keep_going {
            return Ok(());
        }
    }
}

fn inflate_error(what: &str, start: u64, e: impl fmt::Display) -> anyhow::Error {
    anyhow!("{what}: cannot inflate the compressed element at offset {start}: {e}")
}

/// Parses one top-level matrix from `el` (limited to the element's `max` bytes) and reports it.
/// Returns (keep going, data was read).
#[allow(clippy::too_many_arguments)]
fn top_matrix(
    el: &mut dyn Read,
    max: u64,
    endian: Endian,
    what: &str,
    start: u64,
    compressed: bool,
    is_subsys: bool,
    index: usize,
    visit: &mut dyn FnMut(&VarInfo) -> Visit,
    on: &mut dyn FnMut(Event) -> bool,
) -> Result<(bool, bool)> {
    let ctx = |name: Option<&str>| match name {
        Some(n) if !n.is_empty() => format!("{what}: variable '{n}' (element at offset {start})"),
        _ => format!("{what}: variable #{} (element at offset {start})", index + 1),
    };
    let mut lim = Limited { r: el, max };
    let h = read_matrix_header(&mut lim, endian).map_err(|e| e.into_anyhow(&ctx(None), compressed))?;
    if is_subsys {
        // MATLAB's subsystem data (class definitions for objects): not a user variable.
        return Ok((true, false));
    }
    let info = h.info(compressed);
    if !on(Event::Seen(info.clone())) {
        return Ok((false, false));
    }
    if let Some(reason) = h.unsupported() {
        return Ok((on(Event::Skipped(Skipped { var: info, reason })), false));
    }
    if let Visit::Skip = visit(&info) {
        return Ok((true, false));
    }
    let class = MatClass::from_code(h.class_code).unwrap_or(MatClass::Double);
    let numel = h
        .dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| anyhow!("{}: dimensions {:?} overflow", ctx(Some(&h.name)), h.dims))?;
    let data = read_real(&mut lim, endian, class, numel, &h.dims)
        .map_err(|e| e.into_anyhow(&ctx(Some(&h.name)), compressed))?;
    let arr = MatArray { name: h.name, dims: h.dims, class, logical: h.flags & FLAG_LOGICAL != 0, data };
    Ok((on(Event::Array(arr)), true))
}

/// Error while parsing inside an element, before file context is attached.
enum ElemError {
    Io(io::Error),
    Format(String),
}

impl ElemError {
    fn into_anyhow(self, ctx: &str, compressed: bool) -> anyhow::Error {
        match self {
            ElemError::Format(m) => anyhow!("{ctx}: {m}"),
            ElemError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof && !compressed => {
                anyhow!("{ctx}: truncated: the element ends before its contents do ({e})")
            }
            ElemError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => anyhow!(
                "{ctx}: the inflated data ends before the element's contents do \
                 (truncated or corrupt compressed stream: {e})"
            ),
            ElemError::Io(e) if compressed => anyhow!("{ctx}: cannot inflate: {e}"),
            ElemError::Io(e) => anyhow!("{ctx}: read error: {e}"),
        }
    }
}

impl From<io::Error> for ElemError {
    fn from(e: io::Error) -> Self {
        ElemError::Io(e)
    }
}

fn fmt_err(m: impl Into<String>) -> ElemError {
    ElemError::Format(m.into())
}

type ElemResult<T> = std::result::Result<T, ElemError>;

/// The element being parsed, and how many bytes it can hold at most (bounds allocations).
struct Limited<'a> {
    r: &'a mut dyn Read,
    max: u64,
}

/// A sub-element tag: type, byte count, and the inline data of a small element.
struct SubTag {
    ty: u32,
    nbytes: usize,
    small: Option<[u8; 4]>,
}

fn read_sub_tag(r: &mut Limited, endian: Endian) -> ElemResult<SubTag> {
    let mut tag = [0u8; 8];
    r.r.read_exact(&mut tag)?;
    let first = endian.u32(tag[0..4].try_into().unwrap_or_default());
    if first >> 16 != 0 {
        let nbytes = (first >> 16) as usize;
        if nbytes > 4 {
            return Err(fmt_err(format!("small data element claims {nbytes} bytes (at most 4 fit)")));
        }
        let mut d = [0u8; 4];
        d.copy_from_slice(&tag[4..8]);
        Ok(SubTag { ty: first & 0xFFFF, nbytes, small: Some(d) })
    } else {
        let nbytes = endian.u32(tag[4..8].try_into().unwrap_or_default()) as usize;
        Ok(SubTag { ty: first, nbytes, small: None })
    }
}

/// Reads a short sub-element's data (≤ `max` bytes) and its padding.
fn read_sub_small(r: &mut Limited, t: &SubTag, max: usize, what: &str) -> ElemResult<Vec<u8>> {
    if let Some(d) = t.small {
        return Ok(d[..t.nbytes].to_vec());
    }
    if t.nbytes > max {
        return Err(fmt_err(format!("{what} element claims {} bytes (corrupt file)", t.nbytes)));
    }
    let mut v = vec![0u8; t.nbytes];
    r.r.read_exact(&mut v)?;
    skip_padding(r, t.nbytes)?;
    Ok(v)
}

fn skip_padding(r: &mut Limited, nbytes: usize) -> ElemResult<()> {
    let pad = (8 - nbytes % 8) % 8;
    if pad > 0 {
        let mut p = [0u8; 8];
        // The last sub-element's padding may be missing in some writers' output; tolerate EOF.
        let got = read_full(&mut *r.r, &mut p[..pad])?;
        let _ = got;
    }
    Ok(())
}

fn read_matrix_header(r: &mut Limited, endian: Endian) -> ElemResult<MatrixHeader> {
    let t = read_sub_tag(r, endian)?;
    if t.ty != MI_UINT32 || t.nbytes != 8 {
        return Err(fmt_err(format!(
            "array flags must be 8 bytes of miUINT32, found {} bytes of {} (type {})",
            t.nbytes,
            mi_name(t.ty),
            t.ty
        )));
    }
    let f = read_sub_small(r, &t, 8, "array flags")?;
    let flags = endian.u32(f[0..4].try_into().unwrap_or_default());
    let class_code = (flags & 0xFF) as u8;
    if class_code == MX_OPAQUE {
        // Opaque objects have no dimensions element: name, then type-system data.
        let t = read_sub_tag(r, endian)?;
        let name = if t.ty == MI_INT8 || t.ty == MI_UTF8 {
            String::from_utf8_lossy(&read_sub_small(r, &t, 1 << 16, "array name")?).into_owned()
        } else {
            String::new()
        };
        return Ok(MatrixHeader { class_code, flags, dims: vec![], name });
    }
    let t = read_sub_tag(r, endian)?;
    if t.ty != MI_INT32 || t.nbytes % 4 != 0 {
        return Err(fmt_err(format!(
            "dimensions must be miINT32, found {} bytes of {} (type {})",
            t.nbytes,
            mi_name(t.ty),
            t.ty
        )));
    }
    let d = read_sub_small(r, &t, 4 * 1024, "dimensions")?;
    let dims: Vec<i32> = d.chunks_exact(4).map(|c| endian.u32(c.try_into().unwrap_or_default()) as i32).collect();
    if dims.len() < 2 {
        return Err(fmt_err(format!("wrong dims: arrays have at least 2 dimensions, found {dims:?}")));
    }
    if let Some(bad) = dims.iter().find(|&&x| x < 0) {
        return Err(fmt_err(format!("wrong dims: negative dimension {bad} in {dims:?}")));
    }
    let dims: Vec<usize> = dims.into_iter().map(|x| x as usize).collect();
    let t = read_sub_tag(r, endian)?;
    if t.ty != MI_INT8 && t.ty != MI_UTF8 && t.ty != MI_UINT8 {
        return Err(fmt_err(format!("array name must be miINT8, found {} (type {})", mi_name(t.ty), t.ty)));
    }
    let name = read_sub_small(r, &t, 1 << 16, "array name")?;
    let name = String::from_utf8_lossy(&name).into_owned();
    Ok(MatrixHeader { class_code, flags, dims, name })
}

fn read_real(r: &mut Limited, endian: Endian, class: MatClass, numel: usize, dims: &[usize]) -> ElemResult<MatData> {
    let t = read_sub_tag(r, endian)?;
    let size = mi_size(t.ty)
        .ok_or_else(|| fmt_err(format!("real part has non-numeric data type {} (type {})", mi_name(t.ty), t.ty)))?;
    let need = numel.checked_mul(size).ok_or_else(|| fmt_err(format!("dimensions {dims:?} overflow")))?;
    if t.nbytes as u64 > r.max {
        return Err(fmt_err(format!(
            "the real part claims {} bytes, more than its element's {} (truncated or corrupt file)",
            t.nbytes, r.max
        )));
    }
    if t.nbytes != need {
        return Err(fmt_err(format!(
            "wrong dims: the real part holds {} bytes of {} but dimensions {:?} need {} ({} elements)",
            t.nbytes,
            mi_name(t.ty),
            dims,
            need,
            numel
        )));
    }
    let data = match t.small {
        Some(d) => decode(&mut &d[..t.nbytes], t.ty, endian, class, numel)?,
        None => {
            let d = decode(&mut *r.r, t.ty, endian, class, numel)?;
            skip_padding(r, t.nbytes)?;
            d
        }
    };
    Ok(data)
}

/// Stored element decoded to a common wide type before conversion to the class's type.
#[derive(Clone, Copy)]
enum Wide {
    I(i64),
    U(u64),
    F(f64),
}

trait Elem: Copy + Default {
    /// The stored data type that needs no conversion.
    const MI: u32;
    const SIZE: usize;
    fn from_bytes(b: &[u8], e: Endian) -> Self;
    fn from_wide(w: Wide) -> Option<Self>;
}

macro_rules! int_elem {
    ($t:ty, $mi:expr) => {
        impl Elem for $t {
            const MI: u32 = $mi;
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn from_bytes(b: &[u8], e: Endian) -> Self {
                let a: [u8; std::mem::size_of::<$t>()] = b.try_into().unwrap_or_default();
                match e {
                    Endian::Little => <$t>::from_le_bytes(a),
                    Endian::Big => <$t>::from_be_bytes(a),
                }
            }
            #[inline]
            fn from_wide(w: Wide) -> Option<Self> {
                match w {
                    Wide::I(v) => <$t>::try_from(v).ok(),
                    Wide::U(v) => <$t>::try_from(v).ok(),
                    Wide::F(v) => {
                        let c = v as $t; // saturating
                        if c as f64 == v { Some(c) } else { None }
                    }
                }
            }
        }
    };
}
int_elem!(u8, MI_UINT8);
int_elem!(i8, MI_INT8);
int_elem!(u16, MI_UINT16);
int_elem!(i16, MI_INT16);
int_elem!(u32, MI_UINT32);
int_elem!(i32, MI_INT32);
int_elem!(u64, MI_UINT64);
int_elem!(i64, MI_INT64);

macro_rules! float_elem {
    ($t:ty, $mi:expr) => {
        impl Elem for $t {
            const MI: u32 = $mi;
            const SIZE: usize = std::mem::size_of::<$t>();
            #[inline]
            fn from_bytes(b: &[u8], e: Endian) -> Self {
                let a: [u8; std::mem::size_of::<$t>()] = b.try_into().unwrap_or_default();
                match e {
                    Endian::Little => <$t>::from_le_bytes(a),
                    Endian::Big => <$t>::from_be_bytes(a),
                }
            }
            #[inline]
            fn from_wide(w: Wide) -> Option<Self> {
                Some(match w {
                    Wide::I(v) => v as $t,
                    Wide::U(v) => v as $t,
                    Wide::F(v) => v as $t,
                })
            }
        }
    };
}
float_elem!(f32, MI_SINGLE);
float_elem!(f64, MI_DOUBLE);

fn wide(b: &[u8], ty: u32, e: Endian) -> Wide {
    match ty {
        MI_INT8 => Wide::I(i8::from_bytes(b, e) as i64),
        MI_UINT8 => Wide::U(b.first().copied().unwrap_or(0) as u64),
        MI_INT16 => Wide::I(i16::from_bytes(b, e) as i64),
        MI_UINT16 => Wide::U(u16::from_bytes(b, e) as u64),
        MI_INT32 => Wide::I(i32::from_bytes(b, e) as i64),
        MI_UINT32 => Wide::U(u32::from_bytes(b, e) as u64),
        MI_INT64 => Wide::I(i64::from_bytes(b, e)),
        MI_UINT64 => Wide::U(u64::from_bytes(b, e)),
        MI_SINGLE => Wide::F(f32::from_bytes(b, e) as f64),
        _ => Wide::F(f64::from_bytes(b, e)),
    }
}

fn decode(r: &mut dyn Read, ty: u32, e: Endian, class: MatClass, numel: usize) -> ElemResult<MatData> {
    Ok(match class {
        MatClass::UInt8 if ty == MI_UINT8 => {
            // The common case (SIDD): straight into the final vector, no copy.
            let mut v = Vec::new();
            v.try_reserve_exact(numel).map_err(|_| fmt_err(format!("cannot allocate {numel} bytes")))?;
            r.take(numel as u64).read_to_end(&mut v)?;
            if v.len() != numel {
                return Err(ElemError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("real part cut off after {} of {numel} bytes", v.len()),
                )));
            }
            MatData::U8(v)
        }
        MatClass::UInt8 => MatData::U8(decode_as::<u8>(r, ty, e, numel, class)?),
        MatClass::Int8 => MatData::I8(decode_as::<i8>(r, ty, e, numel, class)?),
        MatClass::UInt16 => MatData::U16(decode_as::<u16>(r, ty, e, numel, class)?),
        MatClass::Int16 => MatData::I16(decode_as::<i16>(r, ty, e, numel, class)?),
        MatClass::UInt32 => MatData::U32(decode_as::<u32>(r, ty, e, numel, class)?),
        MatClass::Int32 => MatData::I32(decode_as::<i32>(r, ty, e, numel, class)?),
        MatClass::UInt64 => MatData::U64(decode_as::<u64>(r, ty, e, numel, class)?),
        MatClass::Int64 => MatData::I64(decode_as::<i64>(r, ty, e, numel, class)?),
        MatClass::Single => MatData::F32(decode_as::<f32>(r, ty, e, numel, class)?),
        MatClass::Double => MatData::F64(decode_as::<f64>(r, ty, e, numel, class)?),
    })
}

/// Reads `numel` elements stored as `ty` in chunks, converting each to `T`.
fn decode_as<T: Elem>(r: &mut dyn Read, ty: u32, e: Endian, numel: usize, class: MatClass) -> ElemResult<Vec<T>> {
    let size = mi_size(ty).unwrap_or(1);
    let mut out: Vec<T> = Vec::new();
    out.try_reserve_exact(numel).map_err(|_| fmt_err(format!("cannot allocate {numel} {class} values")))?;
    let mut buf = vec![0u8; (1 << 16) / 8 * 8];
    let mut left = numel;
    while left > 0 {
        let n = left.min(buf.len() / size);
        let chunk = &mut buf[..n * size];
        r.read_exact(chunk)?;
        if ty == T::MI {
            out.extend(chunk.chunks_exact(T::SIZE).map(|b| T::from_bytes(b, e)));
        } else {
            for b in chunk.chunks_exact(size) {
                let w = wide(b, ty, e);
                let v = T::from_wide(w).ok_or_else(|| {
                    let shown = match w {
                        Wide::I(v) => v.to_string(),
                        Wide::U(v) => v.to_string(),
                        Wide::F(v) => v.to_string(),
                    };
                    fmt_err(format!("value {shown} stored as {} does not fit class {class}", mi_name(ty)))
                })?;
                out.push(v);
            }
        }
        left -= n;
    }
    Ok(out)
}

/// Reads until `buf` is full or EOF; returns the count read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn skip(r: &mut dyn Read) -> io::Result<()> {
    io::copy(r, &mut io::sink())?;
    Ok(())
}

fn parse_header(h: &[u8], what: &str) -> Result<Endian> {
    if h.len() >= 8 && h[..8] == *b"\x89HDF\r\n\x1a\n" {
        bail!("{what}: this is an HDF5 file (MATLAB v7.3 MAT-file?), not a v5 MAT-file; only v5 is supported");
    }
    ensure!(
        h.len() == HEADER_LEN as usize,
        "{what}: truncated file: {} bytes, shorter than the 128-byte MAT-file header",
        h.len()
    );
    let endian = match &h[126..128] {
        b"IM" => Endian::Little,
        b"MI" => Endian::Big,
        other => bail!(
            "{what}: not a MATLAB v5 MAT-file: bytes 126-127 are {:?}, not the endian indicator \"IM\" or \"MI\" \
             (MATLAB v4 files are not supported)",
            String::from_utf8_lossy(other)
        ),
    };
    let version = endian.u16([h[124], h[125]]);
    if version == 0x0200 {
        bail!("{what}: this is a MATLAB v7.3 (HDF5) MAT-file; only v5/v7 MAT-files are supported");
    }
    ensure!(version == 0x0100, "{what}: unsupported MAT-file version 0x{version:04x} (expected 0x0100, MATLAB v5)");
    Ok(endian)
}

#[cfg(test)]
pub(in crate::datasets) mod tests {
    use super::write::{WriteOpts, encode_mat, pad8};
    use super::*;

    /// Fixtures written by scipy (tests/reference/make_mat_fixture.py).
    fn fixture(name: &str) -> std::path::PathBuf {
        crate::util::repo_root().join("tests/fixtures/mat").join(name)
    }

    pub(in crate::datasets) fn formula(i: usize, b: usize, y: usize, x: usize, c: usize) -> u8 {
        ((i * 7 + b * 13 + y * 3 + x * 5 + c * 11) % 256) as u8
    }

    /// Column-major (i, b, y, x, c) block array following `formula`.
    pub(in crate::datasets) fn blocks(dims: [usize; 5]) -> Vec<u8> {
        let [ni, nb, h, w, nc] = dims;
        let mut v = Vec::with_capacity(ni * nb * h * w * nc);
        for c in 0..nc {
            for x in 0..w {
                for y in 0..h {
                    for b in 0..nb {
                        for i in 0..ni {
                            v.push(formula(i, b, y, x, c));
                        }
                    }
                }
            }
        }
        v
    }

    pub(in crate::datasets) fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("matv5_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn sample_arrays() -> Vec<(String, Vec<usize>, MatData)> {
        let d5 = [2, 3, 4, 5, 3];
        let doubles: Vec<f64> = (0..12).map(|k| k as f64 * 0.5 - 2.25).collect();
        vec![
            ("blk".to_string(), d5.to_vec(), MatData::U8(blocks(d5))),
            ("a_rather_long_variable_name".to_string(), vec![3, 4], MatData::F64(doubles)),
            ("s".to_string(), vec![1, 1], MatData::U8(vec![42])),
            ("i16x".to_string(), vec![2, 3], MatData::I16(vec![-32768, -1, 0, 1, 300, 32767])),
            ("f32".to_string(), vec![1, 3], MatData::F32(vec![1.5, -0.0, f32::INFINITY])),
            ("empty".to_string(), vec![0, 3], MatData::F64(vec![])),
        ]
    }

    fn as_refs(v: &[(String, Vec<usize>, MatData)]) -> Vec<(&str, &[usize], MatData)> {
        v.iter().map(|(n, d, x)| (n.as_str(), d.as_slice(), x.clone())).collect()
    }

    fn check_sample(got: &[MatArray], want: &[(String, Vec<usize>, MatData)]) {
        assert_eq!(got.len(), want.len());
        for (g, (n, d, x)) in got.iter().zip(want) {
            assert_eq!(&g.name, n);
            assert_eq!(&g.dims, d);
            assert_eq!(g.class, x.class());
            assert_eq!(&g.data, x, "{n}");
        }
    }

    #[test]
    fn round_trip_own_writer() {
        let want = sample_arrays();
        for compress in [false, true] {
            let path = tmp(&format!("rt_{compress}.mat"));
            write_mat(&path, &as_refs(&want), compress).unwrap();
            let got = read_mat(&path).unwrap();
            check_sample(&got, &want);
            let bytes = std::fs::read(&path).unwrap();
            check_sample(&read_mat_bytes(&bytes, "mem").unwrap(), &want);
            // Layout facts: header, then a top-level element of the right type.
            assert_eq!(&bytes[126..128], b"IM");
            assert_eq!(bytes[128], if compress { 15 } else { 14 });
            // read_variable picks one, list_variables sees all.
            let one = read_variable(&path, "a_rather_long_variable_name").unwrap();
            assert_eq!(one.dims, vec![3, 4]);
            assert_eq!(one.data.get_f64(one.linear_index(&[2, 1]).unwrap()), Some(1.0 * 0.5 * 5.0 - 2.25));
            let vars = list_variables(&path).unwrap();
            assert_eq!(vars.len(), want.len());
            assert!(vars.iter().all(|v| v.compressed == compress));
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn small_name_is_a_small_data_element() {
        let bytes = write_mat_bytes(&[("ab", &[1, 2], MatData::U8(vec![1, 2]))], false).unwrap();
        // header(128) + matrix tag(8) + flags(16) + dims(16) → name tag at 168.
        let first = u32::from_le_bytes(bytes[168..172].try_into().unwrap());
        assert_eq!(first, (2 << 16) | MI_INT8);
        assert_eq!(&bytes[172..174], b"ab");
        // The 2-byte real part is a small element too.
        let first = u32::from_le_bytes(bytes[176..180].try_into().unwrap());
        assert_eq!(first, (2 << 16) | MI_UINT8);
        let got = read_mat_bytes(&bytes, "mem").unwrap();
        assert_eq!(got[0].name, "ab");
        assert_eq!(got[0].data, MatData::U8(vec![1, 2]));
    }

    #[test]
    fn big_endian_and_narrow_storage() {
        let want = sample_arrays();
        for compress in [false, true] {
            let mut bytes = Vec::new();
            encode_mat(&mut bytes, &as_refs(&want), WriteOpts { compress, big_endian: true, narrow_doubles: false })
                .unwrap();
            assert_eq!(&bytes[126..128], b"MI");
            check_sample(&read_mat_bytes(&bytes, "be").unwrap(), &want);
        }
        // A double array stored as miUINT8, as MATLAB saves small integers.
        let vals: Vec<f64> = (0..10).map(|k| (k * 25) as f64).collect();
        for big_endian in [false, true] {
            let mut bytes = Vec::new();
            let arrays = [("d", &[2usize, 5][..], MatData::F64(vals.clone()))];
            encode_mat(&mut bytes, &arrays, WriteOpts { compress: false, big_endian, narrow_doubles: true }).unwrap();
            // real part tag right after name (small) → offset 128+8+16+16+8 = 176
            let ty =
                Endian::u32(if big_endian { Endian::Big } else { Endian::Little }, bytes[176..180].try_into().unwrap());
            assert_eq!(ty, MI_UINT8);
            let got = read_mat_bytes(&bytes, "narrow").unwrap();
            assert_eq!(got[0].class, MatClass::Double);
            assert_eq!(got[0].data, MatData::F64(vals.clone()));
        }
    }

    #[test]
    fn scipy_fixture_sidd_like_blocks() {
        let path = fixture("sidd_like_blocks.mat");
        let arrays = read_mat(&path).unwrap();
        assert_eq!(arrays.len(), 1);
        let a = &arrays[0];
        assert_eq!(a.name, "sidd_like_blocks");
        assert_eq!(a.dims, vec![2, 3, 8, 8, 3]);
        assert_eq!(a.class, MatClass::UInt8);
        assert!(list_variables(&path).unwrap()[0].compressed);
        for i in 0..2 {
            for b in 0..3 {
                for y in 0..8 {
                    for x in 0..8 {
                        for c in 0..3 {
                            let k = a.linear_index(&[i, b, y, x, c]).unwrap();
                            assert_eq!(a.as_u8().unwrap()[k], formula(i, b, y, x, c), "({i},{b},{y},{x},{c})");
                        }
                    }
                }
            }
        }
        assert_eq!(read_variable(&path, "sidd_like_blocks").unwrap(), *a);

        let imgs = crate::datasets::sidd::blocks(a).unwrap();
        assert_eq!(imgs.len(), 6);
        let order: Vec<(usize, usize)> = imgs.iter().map(|(id, _)| *id).collect();
        assert_eq!(order, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
        assert_eq!(crate::datasets::sidd::block_id(order[5]), "0001_02");
        for ((i, b), img) in &imgs {
            assert_eq!((img.width, img.height), (8, 8));
            for y in 0..8 {
                for x in 0..8 {
                    for c in 0..3 {
                        assert_eq!(img.get(x, y, c), formula(*i, *b, y, x, c) as f32 / 255.0);
                    }
                }
            }
        }
    }

    #[test]
    fn scipy_fixture_mixed_uncompressed() {
        let path = fixture("mixed_uncompressed.mat");
        let c = read_mat_contents(&path).unwrap();
        let names: Vec<&str> = c.arrays.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["doubles", "shorts"]);
        let d = &c.arrays[0];
        assert_eq!((d.dims.clone(), d.class), (vec![3, 4], MatClass::Double));
        for r in 0..3 {
            for k in 0..4 {
                let v = d.as_f64().unwrap()[d.linear_index(&[r, k]).unwrap()];
                assert_eq!(v, (r * 10 + k) as f64 + 0.25);
            }
        }
        let s = &c.arrays[1];
        assert_eq!((s.dims.clone(), s.class), (vec![2, 5], MatClass::Int16));
        let MatData::I16(sv) = &s.data else { panic!("not i16") };
        for r in 0..2i32 {
            for k in 0..5i32 {
                let want = (r - 1) * 1000 + k * 7 - 3;
                assert_eq!(sv[s.linear_index(&[r as usize, k as usize]).unwrap()] as i32, want);
            }
        }
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(c.skipped[0].var.name, "label");
        assert_eq!(c.skipped[0].var.class, "char");
        let err = read_variable(&path, "label").unwrap_err().to_string();
        assert!(err.contains("label") && err.contains("char"), "{err}");
    }

    fn err_of(bytes: &[u8]) -> String {
        format!("{:#}", read_mat_bytes(bytes, "bad.mat").unwrap_err())
    }

    #[test]
    fn error_truncated() {
        let want = sample_arrays();
        for compress in [false, true] {
            let bytes = write_mat_bytes(&as_refs(&want), compress).unwrap();
            // Every truncation point must give an error naming the file, never a panic.
            for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
                match read_mat_bytes(&bytes[..cut], "bad.mat") {
                    Err(e) => assert!(format!("{e:#}").contains("bad.mat"), "{e:#}"),
                    Ok(a) => assert!(a.len() < want.len() || cut == bytes.len(), "cut {cut} read everything"),
                }
            }
        }
        let bytes = write_mat_bytes(&as_refs(&want), false).unwrap();
        let e = err_of(&bytes[..bytes.len() - 100]);
        assert!(e.contains("truncated"), "{e}");
        assert!(err_of(&bytes[..60]).contains("truncated"));
        let bytes = write_mat_bytes(&as_refs(&want), true).unwrap();
        let e = err_of(&bytes[..bytes.len() - 30]);
        assert!(e.contains("truncated"), "{e}");
        // And on disk.
        let path = tmp("trunc.mat");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let e = format!("{:#}", read_mat(&path).unwrap_err());
        assert!(e.contains("trunc.mat") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn error_corrupt_compressed_and_bad_elements() {
        let d5 = [2usize, 3, 4, 5, 3];
        let bytes = write_mat_bytes(&[("blk", &d5, MatData::U8(blocks(d5)))], true).unwrap();
        // Flip bytes inside the zlib stream: inflate failure or checksum mismatch.
        let mut bad = bytes.clone();
        let mid = 136 + (bad.len() - 136) / 2;
        for b in &mut bad[mid..mid + 8] {
            *b ^= 0xA5;
        }
        let e = err_of(&bad);
        assert!(e.contains("bad.mat") && (e.contains("inflate") || e.contains("compressed")), "{e}");
        // Not zlib at all.
        let mut bad = bytes.clone();
        bad[136] = 0;
        bad[137] = 0;
        let e = err_of(&bad);
        assert!(e.contains("inflate"), "{e}");
        // Unknown element type at top level.
        let mut bad = bytes.clone();
        bad[128..132].copy_from_slice(&99u32.to_le_bytes());
        let e = err_of(&bad);
        assert!(e.contains("unknown data element type 99"), "{e}");
        // Dims that disagree with the data.
        let mut bad = write_mat_bytes(&[("blk", &d5, MatData::U8(blocks(d5)))], false).unwrap();
        // dims sub-element data starts at 128 + 8 + 16 + 8 = 160
        bad[160..164].copy_from_slice(&3u32.to_le_bytes());
        let e = err_of(&bad);
        assert!(e.contains("wrong dims") && e.contains("blk"), "{e}");
        // Negative dimension.
        bad[160..164].copy_from_slice(&(-2i32).to_le_bytes());
        assert!(err_of(&bad).contains("negative dimension"));
        // A zlib stream cut short inside a consistent element (the element's byte count fixed up).
        for keep in [4usize, 20, 60] {
            let n = u32::from_le_bytes(bytes[132..136].try_into().unwrap()) as usize;
            assert!(keep < n);
            let mut cut = bytes[..136 + keep].to_vec();
            cut[132..136].copy_from_slice(&(keep as u32).to_le_bytes());
            let e = err_of(&cut);
            assert!(e.contains("bad.mat") && (e.contains("inflate") || e.contains("truncated")), "{keep}: {e}");
        }
        // A wrong Adler-32 checksum at the end of the zlib stream.
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let e = err_of(&bad);
        assert!(e.contains("inflate"), "{e}");
        // Huge claimed sizes must not allocate or panic.
        let mut bad = bytes.clone();
        bad[132..136].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(err_of(&bad).contains("truncated"));
    }

    #[test]
    fn error_magic_and_version() {
        let good = write_mat_bytes(&[("x", &[1, 1], MatData::F64(vec![1.0]))], false).unwrap();
        let mut bad = good.clone();
        bad[126..128].copy_from_slice(b"XX");
        let e = err_of(&bad);
        assert!(e.contains("bad.mat") && e.contains("not a MATLAB v5 MAT-file"), "{e}");
        let mut bad = good.clone();
        bad[124..126].copy_from_slice(&0x0200u16.to_le_bytes());
        assert!(err_of(&bad).contains("v7.3"));
        let mut bad = good.clone();
        bad[124..126].copy_from_slice(&0x0300u16.to_le_bytes());
        assert!(err_of(&bad).contains("version 0x0300"));
        let mut hdf = b"\x89HDF\r\n\x1a\n".to_vec();
        hdf.resize(600, 0);
        assert!(err_of(&hdf).contains("HDF5"));
        assert!(err_of(b"").contains("truncated"));
        let e = format!("{:#}", read_mat(Path::new("/nonexistent/x.mat")).unwrap_err());
        assert!(e.contains("/nonexistent/x.mat"), "{e}");
    }

    #[test]
    fn error_missing_variable_lists_present() {
        let path = fixture("mixed_uncompressed.mat");
        let e = format!("{:#}", read_variable(&path, "ValidationNoisyBlocksSrgb").unwrap_err());
        assert!(e.contains("mixed_uncompressed.mat") && e.contains("'ValidationNoisyBlocksSrgb'"), "{e}");
        assert!(
            e.contains("doubles (double 3x4)") && e.contains("shorts (int16 2x5)") && e.contains("label (char"),
            "{e}"
        );
    }

    #[test]
    fn complex_is_skipped_or_refused() {
        let mut bytes = write_mat_bytes(
            &[("z", &[1, 2], MatData::F64(vec![1.0, 2.0])), ("r", &[1, 1], MatData::U8(vec![7]))],
            false,
        )
        .unwrap();
        // set the complex flag on the first array (flags word at 128 + 8 + 8)
        let f = u32::from_le_bytes(bytes[144..148].try_into().unwrap()) | FLAG_COMPLEX;
        bytes[144..148].copy_from_slice(&f.to_le_bytes());
        let c = read_mat_bytes_contents(&bytes, "c.mat").unwrap();
        assert_eq!(c.arrays.len(), 1);
        assert_eq!(c.skipped[0].reason, "complex arrays are not supported");
        let e = format!("{:#}", read_variable_bytes(&bytes, "c.mat", "z").unwrap_err());
        assert!(e.contains("complex"), "{e}");
    }

    #[test]
    fn zero_padded_compressed_elements_are_tolerated() {
        let a = [
            ("aa", &[2usize, 2][..], MatData::U8(vec![1, 2, 3, 4])),
            ("bb", &[1, 3][..], MatData::F64(vec![0.5, 1.5, 2.5])),
        ];
        let bytes = write_mat_bytes(&a, true).unwrap();
        // Re-pack with each compressed element padded to 8 bytes.
        let mut padded = bytes[..128].to_vec();
        let mut pos = 128;
        while pos < bytes.len() {
            let n = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
            padded.extend_from_slice(&bytes[pos..pos + 8 + n]);
            padded.resize(padded.len() + pad8(n as u64), 0);
            pos += 8 + n;
        }
        assert_ne!(padded.len(), bytes.len(), "test needs an unaligned element");
        let got = read_mat_bytes(&padded, "padded").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].data, MatData::F64(vec![0.5, 1.5, 2.5]));
    }
}
