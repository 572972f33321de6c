//! PyTorch `.pth` state dicts, read without Python: the zip archive `torch.save` writes (since
//! PyTorch 1.6) holding `data.pkl` — a pickle of the dict, whose tensors refer to storages by
//! key — and one `data/<key>` entry per storage.
//!
//! Only what state dicts use is understood: the pickle opcodes of protocols 2–5 for dicts,
//! lists, tuples, strings, numbers and globals; `OrderedDict`, `torch._utils._rebuild_tensor_v2`
//! and `_rebuild_parameter`; persistent ids `('storage', <torch.*Storage>, key, location, numel)`
//! for float storages (f32, f64, f16, bf16). Anything else — arbitrary objects — is data, never
//! executed: a pickle here cannot run code. The tensors are taken from the top-level dict, or
//! from the dict inside it holding the most tensors (`{"state_dict": ...}`, `{"params": ...}`).

use std::collections::BTreeMap;
use std::io::Read;

use super::StateDict;

/// Entries of a zip archive (stored or deflated), by name.
fn unzip(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let u16at = |o: usize| bytes.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32at = |o: usize| bytes.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize);
    let u64at = |o: usize| bytes.get(o..o + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8")) as usize);
    let bad = || "not a readable zip archive".to_string();
    // End of central directory: the last 22+ bytes (a comment may follow it).
    let eocd = (0..bytes.len().saturating_sub(21))
        .rev()
        .take(65_557)
        .find(|&o| u32at(o) == Some(0x0605_4b50))
        .ok_or_else(bad)?;
    let mut entries = u16at(eocd + 10).ok_or_else(bad)?;
    let mut cd = u32at(eocd + 16).ok_or_else(bad)?;
    if (cd == 0xFFFF_FFFF || entries == 0xFFFF) && eocd >= 20 && u32at(eocd - 20) == Some(0x0706_4b50) {
        // Zip64 locator → zip64 end of central directory.
        let z = u64at(eocd - 12).ok_or_else(bad)?;
        if u32at(z) != Some(0x0606_4b50) {
            return Err(bad());
        }
        entries = u64at(z + 32).ok_or_else(bad)?;
        cd = u64at(z + 48).ok_or_else(bad)?;
    }
    let mut out = BTreeMap::new();
    let mut p = cd;
    for _ in 0..entries {
        if u32at(p) != Some(0x0201_4b50) {
            return Err(bad());
        }
        let method = u16at(p + 10).ok_or_else(bad)?;
        let mut csize = u32at(p + 20).ok_or_else(bad)?;
        let mut usize_ = u32at(p + 24).ok_or_else(bad)?;
        let (nlen, xlen, clen) =
            (u16at(p + 28).ok_or_else(bad)?, u16at(p + 30).ok_or_else(bad)?, u16at(p + 32).ok_or_else(bad)?);
        let mut local = u32at(p + 42).ok_or_else(bad)?;
        let name = String::from_utf8_lossy(bytes.get(p + 46..p + 46 + nlen).ok_or_else(bad)?).into_owned();
        // Zip64 extra field: the 64-bit values of the fields that read 0xFFFFFFFF, in order.
        let mut x = p + 46 + nlen;
        let xend = x + xlen;
        while x + 4 <= xend {
            let (id, len) = (u16at(x).ok_or_else(bad)?, u16at(x + 2).ok_or_else(bad)?);
            if id == 1 {
                let mut q = x + 4;
                for field in [&mut usize_, &mut csize, &mut local] {
                    if *field == 0xFFFF_FFFF {
                        *field = u64at(q).ok_or_else(bad)?;
                        q += 8;
                    }
                }
            }
            x += 4 + len;
        }
        if u32at(local) != Some(0x0403_4b50) {
            return Err(bad());
        }
        let start = local + 30 + u16at(local + 26).ok_or_else(bad)? + u16at(local + 28).ok_or_else(bad)?;
        let raw = bytes.get(start..start.saturating_add(csize)).ok_or_else(|| format!("{name}: cut short"))?;
        let data = match method {
            0 => raw.to_vec(),
            8 => {
                let mut v = Vec::with_capacity(usize_.min(1 << 30));
                flate2::read::DeflateDecoder::new(raw).read_to_end(&mut v).map_err(|e| format!("{name}: {e}"))?;
                v
            }
            m => return Err(format!("{name}: zip compression method {m} is not supported")),
        };
        out.insert(name, data);
        p += 46 + nlen + xlen + clen;
    }
    Ok(out)
}

/// A pickled value; scalars are kept whole for `Debug` (errors) though only ints are read.
#[derive(Clone, Debug)]
#[allow(dead_code)]
enum Val {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Val>),
    List(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(String, String),
    Storage {
        dtype: &'static str,
        key: String,
    },
    Tensor {
        storage: Box<Val>,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    /// A reduce we do not interpret (kept as data).
    Object,
}

fn as_usizes(v: &Val) -> Result<Vec<usize>, String> {
    match v {
        Val::Tuple(items) | Val::List(items) => items
            .iter()
            .map(|x| match x {
                Val::Int(i) if *i >= 0 => Ok(*i as usize),
                _ => Err("a tensor size or stride is not a non-negative integer".to_string()),
            })
            .collect(),
        _ => Err("a tensor size or stride is not a tuple".into()),
    }
}

fn storage_dtype(name: &str) -> &'static str {
    match name {
        "FloatStorage" => "F32",
        "DoubleStorage" => "F64",
        "HalfStorage" => "F16",
        "BFloat16Storage" => "BF16",
        _ => "unsupported",
    }
}

/// Run the pickle in `data` as data (no code), returning its top value.
fn unpickle(data: &[u8]) -> Result<Val, String> {
    let mut stack: Vec<Val> = Vec::new();
    let mut memo: BTreeMap<usize, Val> = BTreeMap::new();
    let mut i = 0;
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = data.get(*i..i.saturating_add(n)).ok_or("pickle cut short")?;
        *i += n;
        Ok(s)
    };
    let pop = |stack: &mut Vec<Val>| stack.pop().ok_or_else(|| "pickle stack underflow".to_string());
    let pop_mark = |stack: &mut Vec<Val>| -> Result<Vec<Val>, String> {
        let m = stack.iter().rposition(|v| matches!(v, Val::Mark)).ok_or("pickle: no mark")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let op = *data.get(i).ok_or("pickle ends without STOP")?;
        i += 1;
        match op {
            0x80 => i += 1,                 // PROTO
            0x95 => i += 8,                 // FRAME
            b'.' => return pop(&mut stack), // STOP
            b'(' => stack.push(Val::Mark),
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool(true)),
            0x89 => stack.push(Val::Bool(false)),
            b'}' => stack.push(Val::Dict(Vec::new())),
            b']' => stack.push(Val::List(Vec::new())),
            b')' => stack.push(Val::Tuple(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Val::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err("pickle stack underflow".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Val::Tuple(items));
            }
            b'J' => stack.push(Val::Int(i32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as i64)),
            b'K' => stack.push(Val::Int(take(&mut i, 1)?[0] as i64)),
            b'M' => stack.push(Val::Int(u16::from_le_bytes(take(&mut i, 2)?.try_into().expect("2")) as i64)),
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = take(&mut i, 1)?[0] as usize;
                let b = take(&mut i, n)?;
                if n > 8 {
                    return Err("pickle: integer wider than 64 bits".into());
                }
                let mut v: i64 = 0;
                for (k, byte) in b.iter().enumerate() {
                    v |= (*byte as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v));
            }
            b'G' => stack.push(Val::Float(f64::from_be_bytes(take(&mut i, 8)?.try_into().expect("8")))),
            b'X' | 0x8c | 0x8d | b'B' | b'C' | 0x8e => {
                let n = match op {
                    0x8c | b'C' => take(&mut i, 1)?[0] as usize,
                    0x8d | 0x8e => u64::from_le_bytes(take(&mut i, 8)?.try_into().expect("8")) as usize,
                    _ => u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize,
                };
                let b = take(&mut i, n)?;
                stack.push(if matches!(op, b'B' | b'C' | 0x8e) {
                    Val::Bytes(b.to_vec())
                } else {
                    Val::Str(String::from_utf8_lossy(b).into_owned())
                });
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as usize;
                memo.insert(k, stack.last().cloned().ok_or("pickle: memo of nothing")?);
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize;
                memo.insert(k, stack.last().cloned().ok_or("pickle: memo of nothing")?);
            }
            0x94 => {
                let k = memo.len();
                memo.insert(k, stack.last().cloned().ok_or("pickle: memo of nothing")?);
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    take(&mut i, 1)?[0] as usize
                } else {
                    u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize
                };
                stack.push(memo.get(&k).cloned().ok_or("pickle: unknown memo key")?);
            }
            b'c' => {
                // GLOBAL "module\nname\n"
                let mut line = || -> Result<String, String> {
                    let end = data[i..].iter().position(|&c| c == b'\n').ok_or("pickle cut short")?;
                    let s = String::from_utf8_lossy(&data[i..i + end]).into_owned();
                    i += end + 1;
                    Ok(s)
                };
                let (m, n) = (line()?, line()?);
                stack.push(Val::Global(m, n));
            }
            0x93 => {
                let n = pop(&mut stack)?;
                let m = pop(&mut stack)?;
                match (m, n) {
                    (Val::Str(m), Val::Str(n)) => stack.push(Val::Global(m, n)),
                    _ => return Err("pickle: STACK_GLOBAL of non-strings".into()),
                }
            }
            b'Q' => {
                // BINPERSID: ('storage', torch.<X>Storage, key, location, numel)
                let pid = pop(&mut stack)?;
                let Val::Tuple(p) = pid else { return Err("pickle: unexpected persistent id".into()) };
                match p.as_slice() {
                    [Val::Str(tag), Val::Global(_, ty), Val::Str(key), ..] if tag == "storage" => {
                        stack.push(Val::Storage { dtype: storage_dtype(ty), key: key.clone() })
                    }
                    _ => return Err("pickle: unexpected persistent id".into()),
                }
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                let args = match args {
                    Val::Tuple(a) => a,
                    _ => vec![],
                };
                let out = match &callable {
                    Val::Global(m, n) if m == "collections" && n == "OrderedDict" => Val::Dict(Vec::new()),
                    Val::Global(m, n) if m == "torch._utils" && n == "_rebuild_tensor_v2" => {
                        let storage = args.first().cloned().ok_or("pickle: tensor without storage")?;
                        let offset = match args.get(1) {
                            Some(Val::Int(o)) if *o >= 0 => *o as usize,
                            _ => return Err("pickle: bad tensor offset".into()),
                        };
                        let shape = as_usizes(args.get(2).ok_or("pickle: tensor without size")?)?;
                        let stride = as_usizes(args.get(3).ok_or("pickle: tensor without stride")?)?;
                        Val::Tensor { storage: Box::new(storage), offset, shape, stride }
                    }
                    Val::Global(m, n) if m == "torch._utils" && n == "_rebuild_parameter" => {
                        args.into_iter().next().ok_or("pickle: parameter without data")?
                    }
                    _ => Val::Object,
                };
                stack.push(out);
            }
            b'b' => {
                // BUILD: an OrderedDict's metadata (`_metadata`) or an object's state: ignored.
                pop(&mut stack)?;
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::Dict(d)) => d.push((k, v)),
                    Some(Val::Object) => {}
                    _ => return Err("pickle: SETITEM on a non-dict".into()),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    Some(Val::Object) => {}
                    _ => return Err("pickle: SETITEMS on a non-dict".into()),
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                if let Some(Val::List(l)) = stack.last_mut() {
                    l.push(v);
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                if let Some(Val::List(l)) = stack.last_mut() {
                    l.extend(items);
                }
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'2' => {
                let top = stack.last().cloned().ok_or("pickle stack underflow")?;
                stack.push(top);
            }
            other => return Err(format!("pickle opcode 0x{other:02x} is not supported in a state dict")),
        }
    }
}

/// Count of tensors directly in a dict.
fn tensors_in(d: &[(Val, Val)]) -> usize {
    d.iter().filter(|(k, v)| matches!(k, Val::Str(_)) && matches!(v, Val::Tensor { .. })).count()
}

/// The dict holding the state: the top value, or the dict inside it with the most tensors.
fn state_of(top: Val) -> Option<Vec<(Val, Val)>> {
    let Val::Dict(d) = top else { return None };
    if tensors_in(&d) > 0 {
        return Some(d);
    }
    d.into_iter()
        .filter_map(|(_, v)| match v {
            Val::Dict(inner) => Some(inner),
            _ => None,
        })
        .max_by_key(|inner| tensors_in(inner))
        .filter(|inner| tensors_in(inner) > 0)
}

pub(super) fn read(bytes: &[u8]) -> Result<StateDict, String> {
    let files = unzip(bytes)?;
    let (pkl_name, pkl) = files
        .iter()
        .find(|(n, _)| n.ends_with("/data.pkl") || n.as_str() == "data.pkl")
        .ok_or("no data.pkl: not a PyTorch checkpoint (torch.save of PyTorch >= 1.6)")?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or_default();
    let state = state_of(unpickle(pkl)?).ok_or("no dict of tensors in the checkpoint")?;
    let mut out = StateDict::default();
    for (k, v) in state {
        let (Val::Str(name), Val::Tensor { storage, offset, shape, stride }) = (k, v) else { continue };
        let Val::Storage { dtype, key } = *storage else { return Err(format!("{name}: tensor without a storage")) };
        if dtype == "unsupported" {
            return Err(format!("{name}: not a float tensor"));
        }
        let raw = files.get(&format!("{prefix}data/{key}")).ok_or_else(|| format!("{name}: storage {key} missing"))?;
        let all = super::decode(raw, dtype).map_err(|e| format!("{name}: {e}"))?;
        let numel: usize = shape.iter().product();
        let mut values = Vec::with_capacity(numel);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..numel {
            let at = offset + idx.iter().zip(&stride).map(|(i, s)| i * s).sum::<usize>();
            values.push(*all.get(at).ok_or_else(|| format!("{name}: view past its storage"))?);
            for d in (0..shape.len()).rev() {
                idx[d] += 1;
                if idx[d] < shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out.tensors.insert(name, (shape, values));
    }
    Ok(out)
}
