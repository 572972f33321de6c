//! Writing MAT-files (v5, little-endian; big-endian and MATLAB's narrow storage of integer
//! doubles for the reader's tests): fixtures for tests, never the tool's output.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::ZlibEncoder;

use super::*;

/// For tests and fixtures: write a v5 MAT-file (little-endian) holding N-D numeric arrays, each as
/// an `miMATRIX`, or as an `miCOMPRESSED` zlib stream when `compress`. `dims` are in MATLAB order
/// and `data` column-major; names of ≤ 4 bytes are written as small data elements.
pub fn write_mat(path: &Path, arrays: &[(&str, &[usize], MatData)], compress: bool) -> Result<()> {
    let file = File::create(path).with_context(|| format!("{}: cannot create MAT-file", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 16, file);
    encode_mat(&mut w, arrays, WriteOpts { compress, ..WriteOpts::default() })
        .with_context(|| format!("{}: cannot write MAT-file", path.display()))?;
    w.flush().with_context(|| format!("{}: cannot write MAT-file", path.display()))?;
    Ok(())
}

/// [`write_mat`] into memory.
pub fn write_mat_bytes(arrays: &[(&str, &[usize], MatData)], compress: bool) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_mat(&mut out, arrays, WriteOpts { compress, ..WriteOpts::default() })?;
    Ok(out)
}

#[derive(Clone, Copy, Default)]
pub(super) struct WriteOpts {
    pub(super) compress: bool,
    pub(super) big_endian: bool,
    /// Store `double` arrays whose values are all integers in 0..=255 as `miUINT8`, as MATLAB does.
    pub(super) narrow_doubles: bool,
}

pub(super) fn encode_mat<W: Write>(w: &mut W, arrays: &[(&str, &[usize], MatData)], o: WriteOpts) -> Result<()> {
    let e = if o.big_endian { Endian::Big } else { Endian::Little };
    let mut header = [b' '; HEADER_LEN as usize];
    let text = b"MATLAB 5.0 MAT-file, Platform: rust, Created by run_pipeline::datasets::matv5";
    header[..text.len()].copy_from_slice(text);
    header[116..124].fill(0);
    header[124..126].copy_from_slice(&put_u16(0x0100, e));
    header[126..128].copy_from_slice(if o.big_endian { b"MI" } else { b"IM" });
    w.write_all(&header)?;
    for (name, dims, data) in arrays {
        ensure!(!name.is_empty() && name.is_ascii(), "array name {name:?} must be non-empty ASCII");
        let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).unwrap_or(usize::MAX);
        ensure!(
            numel == data.len(),
            "array '{name}': dims {dims:?} hold {numel} elements but the data has {}",
            data.len()
        );
        ensure!(dims.len() >= 2, "array '{name}': MATLAB arrays need at least 2 dimensions, got {dims:?}");
        ensure!(dims.iter().all(|&d| d <= i32::MAX as usize), "array '{name}': dimension too large for int32");
        let narrow = o.narrow_doubles
            && matches!(data, MatData::F64(v) if v.iter().all(|&x| (0.0..=255.0).contains(&x) && x.fract() == 0.0));
        let stored = if narrow { MI_UINT8 } else { data.class().mi_type() };
        let data_bytes = numel as u64 * mi_size(stored).unwrap_or(1) as u64;
        let body = 16 // flags
            + sub_len(4 * dims.len() as u64)
            + sub_len(name.len() as u64)
            + sub_len(data_bytes);
        ensure!(body <= u32::MAX as u64, "array '{name}': {body} bytes is too large for a v5 MAT-file element");
        let write_matrix = |w: &mut dyn Write| -> io::Result<()> {
            w.write_all(&put_u32(MI_MATRIX, e))?;
            w.write_all(&put_u32(body as u32, e))?;
            write_sub(w, e, MI_UINT32, &[put_u32(data.class().code() as u32, e), put_u32(0, e)].concat())?;
            let d: Vec<u8> = dims.iter().flat_map(|&x| put_u32(x as u32, e)).collect();
            write_sub(w, e, MI_INT32, &d)?;
            write_sub(w, e, MI_INT8, name.as_bytes())?;
            if data_bytes <= 4 {
                let mut b = Vec::new();
                encode_data(&mut b, data, e, narrow)?;
                return write_sub(w, e, stored, &b);
            }
            w.write_all(&put_u32(stored, e))?;
            w.write_all(&put_u32(data_bytes as u32, e))?;
            encode_data(w, data, e, narrow)?;
            w.write_all(&[0u8; 8][..pad8(data_bytes)])
        };
        if o.compress {
            let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
            write_matrix(&mut z)?;
            let packed = z.finish()?;
            ensure!(packed.len() <= u32::MAX as usize, "array '{name}': compressed element too large");
            w.write_all(&put_u32(MI_COMPRESSED, e))?;
            w.write_all(&put_u32(packed.len() as u32, e))?;
            w.write_all(&packed)?;
        } else {
            write_matrix(w)?;
        }
    }
    Ok(())
}

fn put_u16(v: u16, e: Endian) -> [u8; 2] {
    match e {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    }
}

fn put_u32(v: u32, e: Endian) -> [u8; 4] {
    match e {
        Endian::Little => v.to_le_bytes(),
        Endian::Big => v.to_be_bytes(),
    }
}

pub(super) fn pad8(n: u64) -> usize {
    ((8 - n % 8) % 8) as usize
}

/// Bytes a sub-element with `n` data bytes occupies (tag, data, padding; 8 if small).
fn sub_len(n: u64) -> u64 {
    if n <= 4 { 8 } else { 8 + n + pad8(n) as u64 }
}

fn write_sub(w: &mut dyn Write, e: Endian, ty: u32, data: &[u8]) -> io::Result<()> {
    if data.len() <= 4 {
        w.write_all(&put_u32(((data.len() as u32) << 16) | ty, e))?;
        let mut d = [0u8; 4];
        d[..data.len()].copy_from_slice(data);
        return w.write_all(&d);
    }
    w.write_all(&put_u32(ty, e))?;
    w.write_all(&put_u32(data.len() as u32, e))?;
    w.write_all(data)?;
    w.write_all(&[0u8; 8][..pad8(data.len() as u64)])
}

fn encode_data(w: &mut dyn Write, data: &MatData, e: Endian, narrow: bool) -> io::Result<()> {
    macro_rules! put {
        ($v:expr) => {{
            let mut buf = Vec::with_capacity(1 << 16);
            for chunk in $v.chunks(1 << 12) {
                buf.clear();
                for x in chunk {
                    match e {
                        Endian::Little => buf.extend_from_slice(&x.to_le_bytes()),
                        Endian::Big => buf.extend_from_slice(&x.to_be_bytes()),
                    }
                }
                w.write_all(&buf)?;
            }
            Ok(())
        }};
    }
    match data {
        MatData::F64(v) if narrow => w.write_all(&v.iter().map(|&x| x as u8).collect::<Vec<u8>>()),
        MatData::U8(v) => w.write_all(v),
        MatData::I8(v) => put!(v),
        MatData::U16(v) => put!(v),
        MatData::I16(v) => put!(v),
        MatData::U32(v) => put!(v),
        MatData::I32(v) => put!(v),
        MatData::U64(v) => put!(v),
        MatData::I64(v) => put!(v),
        MatData::F32(v) => put!(v),
        MatData::F64(v) => put!(v),
    }
}

// ------------------------------------------------------------------------------------------------
// Tests
