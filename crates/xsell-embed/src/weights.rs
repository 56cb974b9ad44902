//! Safetensors reading: a validating header parser and an f32 weight store that
//! is either a read-only memory map of the file (zero-copy, shared between
//! processes through the page cache) or an owned copy (converted from F16/BF16
//! when needed).

use crate::EmbedError;
use memmap2::{Mmap, MmapOptions};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Largest accepted JSON header (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

/// One tensor entry of a safetensors header.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorInfo {
    /// Element type as written in the file (`"F32"`, `"F16"`, ...).
    pub dtype: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Byte range inside the data section.
    pub start: usize,
    /// End of the byte range (exclusive).
    pub end: usize,
}

impl TensorInfo {
    /// Number of elements (the product of the shape; validated not to overflow).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed safetensors header.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    /// Length of the JSON header in bytes.
    pub json_len: usize,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
}

impl Header {
    /// Byte offset of the data section in the file.
    pub fn data_offset(&self) -> usize {
        8 + self.json_len
    }

    /// Total number of floating-point parameters (F64/F32/F16/BF16/F8 tensors).
    pub fn float_parameters(&self) -> u64 {
        self.tensors
            .values()
            .filter(|t| {
                matches!(
                    t.dtype.as_str(),
                    "F64" | "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2"
                )
            })
            .map(|t| t.numel() as u64)
            .sum()
    }
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

fn format_err(path: &Path, message: impl Into<String>) -> EmbedError {
    EmbedError::ModelFormat {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn io_err(path: &Path, source: std::io::Error) -> EmbedError {
    EmbedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses and validates the JSON header bytes of a file whose data section holds `data_len` bytes.
pub(crate) fn parse_header(
    path: &Path,
    json: &[u8],
    data_len: usize,
) -> Result<BTreeMap<String, TensorInfo>, EmbedError> {
    let value: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| format_err(path, format!("safetensors header is not valid JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| format_err(path, "safetensors header is not a JSON object"))?;
    let mut tensors = BTreeMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| format_err(path, format!("tensor {name:?}: {what}"));
        let dtype = entry
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad("missing dtype"))?;
        let shape = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("missing shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| bad("shape is not a list of non-negative integers"))?;
        let offsets = entry
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .filter(|a| a.len() == 2)
            .and_then(|a| {
                let s = usize::try_from(a[0].as_u64()?).ok()?;
                let e = usize::try_from(a[1].as_u64()?).ok()?;
                Some((s, e))
            })
            .ok_or_else(|| bad("data_offsets is not a pair of integers"))?;
        let (start, end) = offsets;
        if start > end || end > data_len {
            return Err(bad(&format!(
                "data_offsets [{start}, {end}] lie outside the {data_len}-byte data section (truncated file?)"
            )));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        if let Some(size) = dtype_size(dtype) {
            let bytes = numel
                .checked_mul(size)
                .ok_or_else(|| bad("shape overflows"))?;
            if bytes != end - start {
                return Err(bad(&format!(
                    "{dtype} shape {shape:?} needs {bytes} bytes but data_offsets span {}",
                    end - start
                )));
            }
        }
        tensors.insert(
            name.clone(),
            TensorInfo {
                dtype: dtype.to_string(),
                shape,
                start,
                end,
            },
        );
    }
    Ok(tensors)
}

/// Reads only the header of a safetensors file (a few kilobytes), validating it
/// against the file size.
pub(crate) fn read_header(path: &Path) -> Result<Header, EmbedError> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = f.metadata().map_err(|e| io_err(path, e))?.len();
    let mut len8 = [0u8; 8];
    if file_len < 8 {
        return Err(format_err(
            path,
            format!("file is only {file_len} bytes; not a safetensors file"),
        ));
    }
    f.read_exact(&mut len8).map_err(|e| io_err(path, e))?;
    let json_len = u64::from_le_bytes(len8);
    if json_len > MAX_HEADER || json_len > file_len - 8 {
        return Err(format_err(
            path,
            format!(
                "header length {json_len} does not fit the {file_len}-byte file (corrupt or truncated)"
            ),
        ));
    }
    let json_len = json_len as usize;
    let mut json = vec![0u8; json_len];
    f.read_exact(&mut json).map_err(|e| io_err(path, e))?;
    let data_len = usize::try_from(file_len - 8 - json_len as u64)
        .map_err(|_| format_err(path, "file too large for this platform"))?;
    let tensors = parse_header(path, &json, data_len)?;
    Ok(Header { json_len, tensors })
}

/// Backing memory of the weights.
enum Backing {
    /// Read-only map of the whole file; the f32 view starts at byte `base`.
    Mapped {
        map: Mmap,
        base: usize,
        floats: usize,
    },
    /// Converted copy.
    Owned(Vec<f32>),
}

/// Location of one tensor inside [`Weights::view`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Slot {
    /// First element.
    pub start: usize,
    /// Number of elements.
    pub len: usize,
}

/// f32 weights of the model, addressed by [`Slot`]s.
pub(crate) struct Weights {
    backing: Backing,
    /// Whether the weights are a zero-copy map of the file.
    pub mapped: bool,
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Weights {{ mapped: {}, floats: {} }}",
            self.mapped,
            self.view().len()
        )
    }
}

impl Weights {
    /// All weights as one f32 slice.
    pub fn view(&self) -> &[f32] {
        match &self.backing {
            Backing::Mapped { map, base, floats } => {
                let bytes = &map[*base..*base + floats * 4];
                // SAFETY: `load` checked that `base` is 4-byte aligned in the
                // (page-aligned) map and that `floats * 4` bytes follow it; any bit
                // pattern is a valid f32. The map is read-only and lives as long as self.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), *floats) }
            }
            Backing::Owned(v) => v,
        }
    }

    /// The elements of one tensor.
    #[inline]
    pub fn get(&self, s: Slot) -> &[f32] {
        &self.view()[s.start..s.start + s.len]
    }
}

/// Converts IEEE half-precision bits to f32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    if exp == 0 {
        let v = mant as f32 * (1.0 / 16_777_216.0);
        if sign != 0 { -v } else { v }
    } else if exp == 31 {
        f32::from_bits(sign | 0x7f80_0000 | (mant << 13))
    } else {
        f32::from_bits(sign | ((exp + 112) << 23) | (mant << 13))
    }
}

/// Converts bfloat16 bits to f32 (exact).
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn convert(dtype: &str, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        "F32" => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        "F16" => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
        ),
        "BF16" => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))),
        ),
        _ => unreachable!("dtype checked by the caller"),
    }
}

/// Loads the named tensors, checking each against its expected shape.
///
/// With `mmap` and every requested tensor stored as aligned F32, the file is
/// mapped read-only and nothing is copied; otherwise the requested tensors are
/// read and converted (F32 / F16 / BF16) into an owned buffer.
pub(crate) fn load(
    path: &Path,
    header: &Header,
    wanted: &[(String, Vec<usize>)],
    mmap: bool,
) -> Result<(Weights, Vec<Slot>), EmbedError> {
    let mut infos = Vec::with_capacity(wanted.len());
    for (name, shape) in wanted {
        let info = header
            .tensors
            .get(name)
            .ok_or_else(|| format_err(path, format!("tensor {name:?} is missing")))?;
        if &info.shape != shape {
            return Err(format_err(
                path,
                format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?}",
                    info.shape
                ),
            ));
        }
        if !matches!(info.dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(EmbedError::Unsupported {
                message: format!(
                    "{}: tensor {name:?} has dtype {}; only F32, F16 and BF16 weights are supported",
                    path.display(),
                    info.dtype
                ),
            });
        }
        infos.push(info);
    }
    let base = header.data_offset();
    let zero_copy = mmap
        && base.is_multiple_of(4)
        && infos
            .iter()
            .all(|i| i.dtype == "F32" && i.start.is_multiple_of(4));
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let data_len = infos.iter().map(|i| i.end).max().unwrap_or(0);
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len() as usize;
    if file_len < base + data_len {
        return Err(format_err(
            path,
            format!("file shrank to {file_len} bytes while loading (truncated?)"),
        ));
    }
    if zero_copy {
        // Populated up front, so that the first texts do not pay the page faults.
        // SAFETY: the map is read-only. As with every mapped model file, the file
        // must not be truncated or rewritten in place while mapped (that would make
        // later reads fault); `make install` replaces files rather than editing them.
        let map =
            unsafe { MmapOptions::new().populate().map(&file) }.map_err(|e| io_err(path, e))?;
        if map.len() < base + data_len || !(map.as_ptr() as usize + base).is_multiple_of(4) {
            return Err(format_err(
                path,
                "mapped file is shorter than its header describes",
            ));
        }
        let floats = data_len / 4;
        let slots = infos
            .iter()
            .map(|i| Slot {
                start: i.start / 4,
                len: i.numel(),
            })
            .collect();
        return Ok((
            Weights {
                backing: Backing::Mapped { map, base, floats },
                mapped: true,
            },
            slots,
        ));
    }
    let total: usize = infos.iter().map(|i| i.numel()).sum();
    let mut out = Vec::with_capacity(total);
    let mut slots = Vec::with_capacity(infos.len());
    let mut file = file;
    let mut buf = Vec::new();
    for info in infos {
        buf.resize(info.end - info.start, 0);
        file.seek(SeekFrom::Start((base + info.start) as u64))
            .map_err(|e| io_err(path, e))?;
        file.read_exact(&mut buf).map_err(|e| io_err(path, e))?;
        let start = out.len();
        convert(&info.dtype, &buf, &mut out);
        slots.push(Slot {
            start,
            len: out.len() - start,
        });
    }
    Ok((
        Weights {
            backing: Backing::Owned(out),
            mapped: false,
        },
        slots,
    ))
}

/// Writes a safetensors file (used by tests to build small and corrupt models).
#[cfg(test)]
pub(crate) fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !(8 + json.len()).is_multiple_of(8) {
        json.push(b' ');
    }
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&json);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("xsell-embed-w-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("model.safetensors")
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn half_conversions_are_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn mapped_owned_and_converted_loads_agree() {
        let p = tmp("ok");
        let a = [1.0f32, -2.5, 3.25, 4.0];
        let h: Vec<u8> = [0x3c00u16, 0xc000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [0x3f80u16, 0xc040]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write_safetensors(
            &p,
            &[
                ("a", "F32", vec![2, 2], f32_bytes(&a)),
                ("h", "F16", vec![2], h),
                ("b", "BF16", vec![2], b),
                ("ids", "I64", vec![1], vec![0; 8]),
            ],
        );
        let header = read_header(&p).unwrap();
        assert_eq!(header.float_parameters(), 8);
        let want_a = vec![("a".to_string(), vec![2, 2])];
        let (w, s) = load(&p, &header, &want_a, true).unwrap();
        assert!(w.mapped);
        assert_eq!(w.get(s[0]), &a);
        let (w, s) = load(&p, &header, &want_a, false).unwrap();
        assert!(!w.mapped);
        assert_eq!(w.get(s[0]), &a);
        let all = vec![
            ("a".to_string(), vec![2, 2]),
            ("h".to_string(), vec![2]),
            ("b".to_string(), vec![2]),
        ];
        let (w, s) = load(&p, &header, &all, true).unwrap();
        assert!(!w.mapped, "F16 tensors force a converted copy");
        assert_eq!(w.get(s[1]), &[1.0, -2.0]);
        assert_eq!(w.get(s[2]), &[1.0, -3.0]);
        assert_eq!(w.get(s[0]), &a);

        let e = load(&p, &header, &[("a".to_string(), vec![4])], true).unwrap_err();
        assert!(
            matches!(e, EmbedError::ModelFormat { .. }) && e.to_string().contains("shape"),
            "{e}"
        );
        let e = load(&p, &header, &[("zzz".to_string(), vec![1])], true).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let e = load(&p, &header, &[("ids".to_string(), vec![1])], true).unwrap_err();
        assert!(matches!(e, EmbedError::Unsupported { .. }), "{e}");
    }

    #[test]
    fn corrupt_and_truncated_files_are_errors() {
        let p = tmp("bad");
        write_safetensors(
            &p,
            &[("a", "F32", vec![4], f32_bytes(&[1.0, 2.0, 3.0, 4.0]))],
        );
        let full = std::fs::read(&p).unwrap();
        // Truncated data section.
        std::fs::write(&p, &full[..full.len() - 3]).unwrap();
        let e = read_header(&p).unwrap_err();
        assert!(
            matches!(e, EmbedError::ModelFormat { .. }) && e.to_string().contains("truncated"),
            "{e}"
        );
        // Truncated inside the header.
        std::fs::write(&p, &full[..20]).unwrap();
        assert!(matches!(
            read_header(&p),
            Err(EmbedError::ModelFormat { .. })
        ));
        // Too short for the length prefix.
        std::fs::write(&p, [1u8, 2]).unwrap();
        assert!(matches!(
            read_header(&p),
            Err(EmbedError::ModelFormat { .. })
        ));
        // Absurd header length.
        let mut bad = full.clone();
        bad[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        std::fs::write(&p, &bad).unwrap();
        assert!(matches!(
            read_header(&p),
            Err(EmbedError::ModelFormat { .. })
        ));
        // Garbage JSON.
        let mut bad = full.clone();
        bad[8] = b'!';
        std::fs::write(&p, &bad).unwrap();
        let e = read_header(&p).unwrap_err();
        assert!(e.to_string().contains("JSON"), "{e}");
        // Missing file.
        let e = read_header(&p.with_file_name("nope.safetensors")).unwrap_err();
        assert!(matches!(e, EmbedError::Io { .. }), "{e}");
    }

    #[test]
    fn header_validation() {
        let p = Path::new("x.safetensors");
        let ok = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        assert_eq!(parse_header(p, ok, 8).unwrap()["a"].numel(), 2);
        for (json, what) in [
            (&br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#[..], "needs 12 bytes"),
            (br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, "outside"),
            (br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}}"#, "outside"),
            (br#"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, "dtype"),
            (br#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, "shape"),
            (br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, "data_offsets"),
            (br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}}"#, "overflow"),
            (br#"[1,2]"#, "object"),
        ] {
            let e = parse_header(p, json, 8).unwrap_err();
            assert!(e.to_string().contains(what), "{e} should mention {what}");
        }
    }
}
