//! One `.safetensors` file, memory-mapped: an 8-byte little-endian header length, a JSON header
//! mapping tensor names to dtype, shape and byte range, then the data. The header is validated in
//! full before any tensor is handed out, so a view never reaches outside the file.
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rio_core::{DType, Error, Result, TensorRef};
use serde::Deserialize;

/// Largest JSON header accepted; real headers of 800 GB checkpoints' shards are a few MB.
const MAX_HEADER_BYTES: u64 = 100 * 1024 * 1024;

/// Element types a safetensors header may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StoredDType {
    Bool,
    U8,
    I8,
    F8E4M3,
    F8E5M2,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl StoredDType {
    const ALL: [StoredDType; 15] = [
        StoredDType::Bool,
        StoredDType::U8,
        StoredDType::I8,
        StoredDType::F8E4M3,
        StoredDType::F8E5M2,
        StoredDType::I16,
        StoredDType::U16,
        StoredDType::F16,
        StoredDType::BF16,
        StoredDType::I32,
        StoredDType::U32,
        StoredDType::F32,
        StoredDType::I64,
        StoredDType::U64,
        StoredDType::F64,
    ];

    /// The header's spelling (`"BF16"`, `"F8_E4M3"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            StoredDType::Bool => "BOOL",
            StoredDType::U8 => "U8",
            StoredDType::I8 => "I8",
            StoredDType::F8E4M3 => "F8_E4M3",
            StoredDType::F8E5M2 => "F8_E5M2",
            StoredDType::I16 => "I16",
            StoredDType::U16 => "U16",
            StoredDType::F16 => "F16",
            StoredDType::BF16 => "BF16",
            StoredDType::I32 => "I32",
            StoredDType::U32 => "U32",
            StoredDType::F32 => "F32",
            StoredDType::I64 => "I64",
            StoredDType::U64 => "U64",
            StoredDType::F64 => "F64",
        }
    }

    pub fn parse(s: &str) -> Option<StoredDType> {
        StoredDType::ALL.into_iter().find(|d| d.name() == s)
    }

    pub fn size(self) -> usize {
        match self {
            StoredDType::Bool | StoredDType::U8 | StoredDType::I8 | StoredDType::F8E4M3 | StoredDType::F8E5M2 => 1,
            StoredDType::I16 | StoredDType::U16 | StoredDType::F16 | StoredDType::BF16 => 2,
            StoredDType::I32 | StoredDType::U32 | StoredDType::F32 => 4,
            StoredDType::I64 | StoredDType::U64 | StoredDType::F64 => 8,
        }
    }

    /// The rio_rt dtype this is read in place as, if rio_rt computes with it.
    pub fn compute(self) -> Option<DType> {
        match self {
            StoredDType::F16 => Some(DType::F16),
            StoredDType::BF16 => Some(DType::BF16),
            StoredDType::F32 => Some(DType::F32),
            StoredDType::I32 => Some(DType::I32),
            StoredDType::I64 => Some(DType::I64),
            _ => None,
        }
    }
}

impl std::fmt::Display for StoredDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where one tensor lives in its file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub dtype: StoredDType,
    pub shape: Vec<usize>,
    /// Byte range inside the file (not the data section).
    pub bytes: Range<usize>,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A parsed, validated header.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub tensors: BTreeMap<String, TensorInfo>,
    /// The optional `__metadata__` string map.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInfo {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Parses and validates the header of a whole safetensors file held in `file_bytes`; `file` names
/// the file in errors. Checks: header length against the file size, JSON shape, known dtypes,
/// element count × dtype size = byte length, ranges inside the data section, no overlaps.
pub fn parse_header(file_bytes: &[u8], file: &str) -> Result<Header> {
    let err = |message: String| Error::checkpoint(file, message);
    let len = file_bytes.len() as u64;
    if len < 8 {
        return Err(err(format!("file is {len} bytes, too short for the 8-byte header length")));
    }
    let n = u64::from_le_bytes(file_bytes[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_BYTES {
        return Err(err(format!("header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit (not a safetensors file?)")));
    }
    if n > len - 8 {
        return Err(err(format!("header length {n} but only {} bytes follow it (truncated file?)", len - 8)));
    }
    let data_start = 8 + n as usize;
    let data_len = file_bytes.len() - data_start;
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&file_bytes[8..data_start]).map_err(|e| err(format!("header is not a JSON object of tensors: {e}")))?;

    let mut header = Header::default();
    for (name, value) in raw {
        if name == "__metadata__" {
            header.metadata = serde_json::from_value(value).map_err(|e| err(format!("__metadata__ must map strings to strings: {e}")))?;
            continue;
        }
        let info: RawInfo = serde_json::from_value(value).map_err(|e| err(format!("tensor {name}: bad header entry: {e}")))?;
        let dtype = StoredDType::parse(&info.dtype).ok_or_else(|| err(format!("tensor {name}: unknown dtype {:?}", info.dtype)))?;
        let shape: Vec<usize> = info
            .shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| err(format!("tensor {name}: dimension {d} too large"))))
            .collect::<Result<_>>()?;
        let nbytes = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| err(format!("tensor {name}: shape {shape:?} overflows")))?;
        let [begin, end] = info.data_offsets;
        if begin > end || end > data_len as u64 {
            return Err(err(format!(
                "tensor {name}: data_offsets [{begin}, {end}] outside the {data_len}-byte data section (truncated file?)"
            )));
        }
        if end - begin != nbytes as u64 {
            return Err(err(format!(
                "tensor {name}: shape {shape:?} of {dtype} needs {nbytes} bytes but data_offsets [{begin}, {end}] hold {}",
                end - begin
            )));
        }
        let bytes = data_start + begin as usize..data_start + end as usize;
        header.tensors.insert(name, TensorInfo { dtype, shape, bytes });
    }

    let mut ranges: Vec<(&String, &Range<usize>)> = header.tensors.iter().map(|(k, v)| (k, &v.bytes)).collect();
    ranges.sort_by_key(|(_, r)| (r.start, r.end));
    for pair in ranges.windows(2) {
        let ((a, ra), (b, rb)) = (pair[0], pair[1]);
        if rb.start < ra.end && !ra.is_empty() && !rb.is_empty() {
            return Err(err(format!("tensors {a} and {b} overlap (bytes {ra:?} and {rb:?})")));
        }
    }
    Ok(header)
}

/// A memory-mapped safetensors file. Views borrow the map, so they cannot outlive it.
///
/// Like every memory-mapped reader, this assumes no other process truncates or rewrites the
/// file while it is open.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Mmap,
    header: Header,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile").field("path", &self.path).field("tensors", &self.header.tensors.len()).finish()
    }
}

impl SafetensorsFile {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let file = File::open(&path).map_err(|e| Error::checkpoint(&shown, format!("cannot open: {e}")))?;
        let len = file.metadata().map_err(|e| Error::checkpoint(&shown, format!("cannot stat: {e}")))?.len();
        if len < 8 {
            return Err(Error::checkpoint(&shown, format!("file is {len} bytes, too short for the 8-byte header length")));
        }
        // SAFETY: the map is read-only; see the type's note on concurrent writers.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::checkpoint(&shown, format!("cannot memory-map: {e}")))?;
        let header = parse_header(&map, &shown)?;
        Ok(SafetensorsFile { path, map, header })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensors.get(name)
    }

    /// The stored bytes of a tensor.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name).ok_or_else(|| self.error(format!("no tensor named {name}")))?;
        Ok(&self.map[info.bytes.clone()])
    }

    /// A zero-copy, contiguous view of a tensor in its stored dtype.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let info = self.info(name).ok_or_else(|| self.error(format!("no tensor named {name}")))?;
        let dtype = info
            .dtype
            .compute()
            .ok_or_else(|| self.error(format!("tensor {name} is stored as {}, which rio_rt does not read", info.dtype)))?;
        let bytes = &self.map[info.bytes.clone()];
        if !(bytes.as_ptr() as usize).is_multiple_of(dtype.size()) {
            return Err(self.error(format!(
                "tensor {name} starts at byte {}, not aligned to its {}-byte elements",
                info.bytes.start,
                dtype.size()
            )));
        }
        // SAFETY: the header check keeps the byte range inside the map, its length equals
        // numel × element size, the start is aligned, and the view borrows `self`.
        Ok(unsafe { TensorRef::from_raw(bytes.as_ptr(), dtype, info.shape.clone(), contiguous_strides(&info.shape)) })
    }

    /// Tells the OS how the file will be read: `Sequential` reads ahead aggressively, `Random`
    /// reads only the pages touched (sampling an 800 GB checkpoint must not read around each
    /// sample). Advice only: failures are ignored.
    pub fn advise(&self, access: Access) {
        #[cfg(unix)]
        let _ = self.map.advise(match access {
            Access::Sequential => memmap2::Advice::Sequential,
            Access::Random => memmap2::Advice::Random,
        });
        #[cfg(not(unix))]
        let _ = access;
    }

    fn error(&self, message: String) -> Error {
        Error::checkpoint(self.path.display().to_string(), message)
    }
}

/// Asks the OS to start reading `bytes` (part of a memory-mapped file) into memory now, so that
/// many scattered reads are in flight at once instead of one page fault at a time. Advice only.
pub fn will_need(bytes: &[u8]) {
    #[cfg(unix)]
    if !bytes.is_empty() {
        // SAFETY: sysconf has no preconditions.
        let page = (unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).max(1) as usize;
        let start = bytes.as_ptr() as usize / page * page;
        let end = bytes.as_ptr() as usize + bytes.len();
        // SAFETY: WILLNEED only schedules reads; the page-aligned range starts inside the same
        // mapping as `bytes` (mappings are page-aligned), and the kernel ignores what lies outside.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_WILLNEED) };
    }
    #[cfg(not(unix))]
    let _ = bytes;
}

/// How a file's tensors are about to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Sequential,
    Random,
}

pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![1isize; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1].max(1) as isize;
    }
    strides
}
