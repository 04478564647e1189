//! Tensor arguments and results crossing the Python boundary without copies.
//!
//! In: [`borrow`] / [`borrow_mut`] view numpy arrays (through `__array_struct__`, or the
//! `__array_interface__` dict for other array-likes; both carry `ml_dtypes.bfloat16`) and
//! anything with `__dlpack__` (torch CPU tensors, see `dlpack`) in place. A copy is made only
//! when the kernels cannot read the layout (negative or overlapping strides, inner stride not 1,
//! misaligned data). [`borrow_in_place`] never copies and, when asked, reads numpy `uint16`
//! arrays as bf16 bits (the benchmarks, which time the caller's own bytes and need no ml_dtypes);
//! [`KeepAlive`] holds borrowed tensors for views stored past a call.
//! Out: [`ArrayKind`] allocates results in the caller's library, or hands it a Rust-owned buffer
//! ([`NativeTensor`]) through DLPack.
use std::ffi::c_void;
use std::ptr::NonNull;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use rio_core::{DType, Tensor, TensorMut, TensorRef};

use crate::dlpack::{self, NativeTensor};

/// Keeps the memory of a borrowed tensor alive: the Python object, or a consumed DLPack capsule.
#[allow(dead_code)] // never read: holding it is what keeps the memory alive
enum Owner {
    Object(Py<PyAny>),
    DlPack(dlpack::Imported),
}

/// A tensor argument borrowed from Python (or, when its layout needs it, a contiguous copy).
pub(crate) struct PyTensor {
    ptr: *mut u8,
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<isize>,
    copy: Option<Tensor>,
    _owner: Owner,
}

impl PyTensor {
    /// Views of no elements get a dangling aligned pointer and contiguous strides, whatever the
    /// producer said: their strides and address are arbitrary and nothing is ever read.
    fn new(ptr: *mut u8, dtype: DType, shape: Vec<usize>, strides: Vec<isize>, owner: Owner) -> PyTensor {
        let (ptr, strides) = if shape.iter().product::<usize>() == 0 { (dangling(), contiguous_strides(&shape)) } else { (ptr, strides) };
        PyTensor { ptr, dtype, shape, strides, copy: None, _owner: owner }
    }

    pub(crate) fn dtype(&self) -> DType {
        self.dtype
    }
    pub(crate) fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// A view valid as long as `self`.
    pub(crate) fn view(&self) -> TensorRef<'_> {
        match &self.copy {
            // SAFETY: the copy is contiguous and holds exactly the elements of `shape`.
            Some(t) => unsafe { TensorRef::from_raw(t.bytes().as_ptr(), self.dtype, self.shape.clone(), contiguous_strides(&self.shape)) },
            // SAFETY: ptr/shape/strides describe memory the owner keeps alive (checked on borrow).
            None => unsafe { TensorRef::from_raw(self.ptr, self.dtype, self.shape.clone(), self.strides.clone()) },
        }
    }

    /// A writable view; only for tensors from [`borrow_mut`], which never copies.
    pub(crate) fn view_mut(&mut self) -> TensorMut<'_> {
        debug_assert!(self.copy.is_none());
        // SAFETY: as `view`; `borrow_mut` checked the memory is writable, and `&mut self` is exclusive.
        unsafe { TensorMut::from_raw(self.ptr, self.dtype, self.shape.clone(), self.strides.clone()) }
    }

    /// Views a 1-D `[n]` tensor as `[1, n]`.
    pub(crate) fn unsqueeze0(mut self) -> PyTensor {
        if self.shape.len() == 1 {
            let n = self.shape[0];
            self.shape.insert(0, 1);
            self.strides.insert(0, n as isize);
        }
        self
    }

    /// The elements as i64 (for index tensors), in row-major order.
    pub(crate) fn to_i64_vec(&self) -> Vec<i64> {
        let flat = self.view().to_contiguous();
        match flat.dtype() {
            DType::I32 => flat.as_slice::<i32>().iter().map(|&v| v as i64).collect(),
            DType::I64 => flat.as_slice::<i64>().to_vec(),
            _ => unreachable!("callers borrow index tensors as int32 or int64"),
        }
    }
}

/// Borrowed tensors held for views that outlive the call that borrowed them (a pyclass storing
/// weight views). It only holds: nothing reaches the tensors again until it drops.
#[derive(Default)]
pub(crate) struct KeepAlive {
    tensors: Vec<PyTensor>,
}

// SAFETY: `PyTensor` is !Send/!Sync only for its raw pointer, which `KeepAlive` never
// dereferences (the views handed out by `keep` carry their own Send/Sync contract), and it gives
// no access to the tensors, so sharing it across threads shares nothing. Moving it to another
// thread moves only owners that may drop there: `Py<PyAny>` is Send, a `Tensor` copy is plain
// memory, and a DLPack deleter must be callable from any thread (the DLPack contract; numpy's
// takes the GIL itself, torch's drops an atomic reference count).
unsafe impl Send for KeepAlive {}
unsafe impl Sync for KeepAlive {}

impl KeepAlive {
    /// Holds `t` and returns a view of it that is not tied to a borrow of `self`.
    ///
    /// # Safety
    /// The view must not be used once `self` has dropped (in a struct, declare the field that
    /// stores the views before the `KeepAlive`, so it drops first). Moving `t` in here does not
    /// move its elements: they live in the Python owner's memory or in the copy's heap buffer.
    pub(crate) unsafe fn keep(&mut self, t: PyTensor) -> TensorRef<'static> {
        let v = t.view();
        // SAFETY: the elements stay where they are for as long as `t`, which `self` now holds;
        // the caller promises not to use the view past `self`.
        let v = unsafe { TensorRef::from_raw(v.as_ptr(), v.dtype(), v.shape().to_vec(), v.strides().to_vec()) };
        self.tensors.push(t);
        v
    }
}

/// The kernels read rows with unit inner stride, rows not overlapping, and aligned elements.
fn kernel_readable(ptr: *const u8, dtype: DType, shape: &[usize], strides: &[isize]) -> bool {
    let n = shape.len();
    if shape.iter().product::<usize>() == 0 {
        return true;
    }
    let aligned = (ptr as usize).is_multiple_of(dtype.size());
    let nonnegative = strides.iter().all(|&s| s >= 0);
    let unit_inner = n == 0 || shape[n - 1] <= 1 || strides[n - 1] == 1;
    let rows_apart = n < 2 || shape[n - 2] <= 1 || strides[n - 2] >= shape[n - 1] as isize;
    aligned && nonnegative && unit_inner && rows_apart
}

fn dtype_names(allowed: &[DType]) -> String {
    let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into())
}

fn dtype_error(arg: &str, allowed: &[DType], mode: Mode, actual: &str) -> PyErr {
    let bits = if mode.uint16_as_bf16 { " (or uint16 holding bf16 bits)" } else { "" };
    PyTypeError::new_err(format!("{arg}: expected dtype {}{bits}, got {actual}", dtype_names(allowed)))
}

/// Borrows a numpy array or DLPack tensor (torch) for reading; `allowed` lists the dtypes the
/// argument may have. Errors name `arg`.
pub(crate) fn borrow(obj: &Bound<'_, PyAny>, arg: &str, allowed: &[DType]) -> PyResult<PyTensor> {
    let mut t = borrow_any(obj, arg, allowed, Mode { writable: false, may_copy: true, uint16_as_bf16: false })?;
    if !kernel_readable(t.ptr, t.dtype, &t.shape, &t.strides) {
        t.copy = Some(t.view().to_contiguous());
    }
    Ok(t)
}

/// Borrows an output tensor for writing; it must be writable and contiguous (never copied).
pub(crate) fn borrow_mut(obj: &Bound<'_, PyAny>, arg: &str, allowed: &[DType]) -> PyResult<PyTensor> {
    let t = borrow_any(obj, arg, allowed, Mode { writable: true, may_copy: false, uint16_as_bf16: false })?;
    if !t.view().is_contiguous() || !(t.ptr as usize).is_multiple_of(t.dtype.size()) {
        return Err(PyValueError::new_err(format!("{arg}: must be a contiguous, aligned array to write into")));
    }
    Ok(t)
}

/// Borrows for reading exactly where the data lies, never copying: for benchmarks, which must
/// time the caller's own bytes. Misaligned data is refused; other layouts (negative or
/// non-unit strides) are left for the caller or the kernel to check. Where `allowed` has bf16, a
/// numpy `uint16` array is read as bf16 bit patterns, as `rio_rt.bench.weights` builds them
/// (numpy has no bfloat16 without ml_dtypes); other borrows keep rejecting `uint16`.
pub(crate) fn borrow_in_place(obj: &Bound<'_, PyAny>, arg: &str, allowed: &[DType]) -> PyResult<PyTensor> {
    let t = borrow_any(obj, arg, allowed, Mode { writable: false, may_copy: false, uint16_as_bf16: true })?;
    if !(t.ptr as usize).is_multiple_of(t.dtype.size()) {
        return Err(PyValueError::new_err(format!("{arg}: data is not aligned to its {}-byte elements", t.dtype.size())));
    }
    Ok(t)
}

/// What a borrow may do beyond matching `allowed`.
#[derive(Clone, Copy)]
struct Mode {
    /// The memory will be written: read-only arrays are refused.
    writable: bool,
    /// Strides that are not whole elements may be fixed by a numpy copy (else refused).
    may_copy: bool,
    /// A numpy `uint16` array counts as bf16 bits.
    uint16_as_bf16: bool,
}

fn borrow_any(obj: &Bound<'_, PyAny>, arg: &str, allowed: &[DType], mode: Mode) -> PyResult<PyTensor> {
    let mode = Mode { uint16_as_bf16: mode.uint16_as_bf16 && allowed.contains(&DType::BF16), ..mode };
    if let Some(t) = from_array_struct(obj, allowed, mode)? {
        return Ok(t);
    }
    // numpy builds the interface dict on every access, so it is fetched once.
    if let Some(interface) = obj.getattr_opt("__array_interface__")? {
        from_array_interface(obj, &interface, arg, allowed, mode)
    } else if obj.hasattr("__dlpack__")? {
        from_dlpack(obj, arg, allowed, mode)
    } else {
        Err(PyTypeError::new_err(format!("{arg}: expected a numpy array or a torch tensor, got {}", type_name(obj))))
    }
}

/// numpy's `PyArrayInterface`, the C struct behind `__array_struct__`.
#[repr(C)]
struct ArrayInterface {
    two: i32,
    nd: i32,
    typekind: u8,
    itemsize: i32,
    flags: i32,
    shape: *const isize,
    strides: *const isize,
    data: *mut c_void,
    descr: *mut pyo3::ffi::PyObject,
}

const NPY_NOTSWAPPED: i32 = 0x200;
const NPY_WRITEABLE: i32 = 0x400;

/// The fast path for numpy arrays: `__array_struct__` is a capsule, 20 times cheaper to get than
/// the `__array_interface__` dict. `None` for anything unusual (other objects, byte-swapped or
/// unsupported dtypes, strides that are not whole elements): the dict path then copies or
/// explains.
fn from_array_struct(obj: &Bound<'_, PyAny>, allowed: &[DType], mode: Mode) -> PyResult<Option<PyTensor>> {
    let Some(capsule) = obj.getattr_opt("__array_struct__")? else { return Ok(None) };
    // SAFETY: numpy's capsule is unnamed and points at a PyArrayInterface that lives as long as
    // the capsule; everything is copied out before it drops.
    let (dtype, shape, strides, data) = unsafe {
        let raw = capsule.as_ptr();
        if pyo3::ffi::PyCapsule_IsValid(raw, std::ptr::null()) != 1 {
            return Ok(None);
        }
        let ai = &*(pyo3::ffi::PyCapsule_GetPointer(raw, std::ptr::null()) as *const ArrayInterface);
        if ai.two != 2 || ai.nd < 0 || ai.flags & NPY_NOTSWAPPED == 0 || (mode.writable && ai.flags & NPY_WRITEABLE == 0) {
            return Ok(None);
        }
        let dtype = match (ai.typekind, ai.itemsize) {
            (b'f', 4) => DType::F32,
            (b'f', 2) => DType::F16,
            (b'i', 4) => DType::I32,
            (b'i', 8) => DType::I64,
            (b'u', 2) if mode.uint16_as_bf16 => DType::BF16,
            (b'V', 2) if obj.getattr("dtype")?.getattr("type")?.getattr("__name__")?.extract::<String>()? == "bfloat16" => DType::BF16,
            _ => return Ok(None),
        };
        let nd = ai.nd as usize;
        let shape: Vec<usize> =
            if nd == 0 { vec![] } else { std::slice::from_raw_parts(ai.shape, nd).iter().map(|&d| d as usize).collect() };
        let byte_strides: Option<Vec<isize>> =
            (!ai.strides.is_null() && nd > 0).then(|| std::slice::from_raw_parts(ai.strides, nd).to_vec());
        let esize = dtype.size() as isize;
        let strides = match byte_strides {
            None => contiguous_strides(&shape),
            Some(bs) if bs.iter().all(|s| s % esize == 0) => bs.iter().map(|s| s / esize).collect(),
            Some(_) => return Ok(None),
        };
        (dtype, shape, strides, ai.data as *mut u8)
    };
    if !allowed.contains(&dtype) || (data.is_null() && shape.iter().product::<usize>() != 0) {
        return Ok(None);
    }
    Ok(Some(PyTensor::new(data, dtype, shape, strides, Owner::Object(obj.clone().unbind()))))
}

fn from_array_interface(
    obj: &Bound<'_, PyAny>,
    interface: &Bound<'_, PyAny>,
    arg: &str,
    allowed: &[DType],
    mode: Mode,
) -> PyResult<PyTensor> {
    let ai = interface.cast::<PyDict>().map_err(|_| PyTypeError::new_err(format!("{arg}: __array_interface__ is not a dict")))?;
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        ai.get_item(key)?.ok_or_else(|| PyTypeError::new_err(format!("{arg}: __array_interface__ lacks {key:?}")))
    };
    let malformed = |key: &str| PyTypeError::new_err(format!("{arg}: __array_interface__ has a malformed {key:?}"));
    let typestr: String = get("typestr")?.extract().map_err(|_| malformed("typestr"))?;
    let shape: Vec<usize> = get("shape")?.extract().map_err(|_| malformed("shape"))?;
    let (addr, readonly): (usize, bool) = get("data")?.extract().map_err(|_| malformed("data"))?;
    let byte_strides: Option<Vec<isize>> = match ai.get_item("strides")? {
        Some(s) => s.extract().map_err(|_| malformed("strides"))?,
        None => None,
    };
    // The numpy dtype name, for messages and to tell ml_dtypes.bfloat16 from other opaque 2-byte
    // types; only looked up when needed, as it is slow.
    let dtype_name =
        || obj.getattr("dtype").and_then(|d| d.getattr("name")).and_then(|n| n.extract::<String>()).unwrap_or_else(|_| typestr.clone());
    if typestr.starts_with('>') {
        return Err(dtype_error(arg, allowed, mode, &format!("{} (big-endian)", dtype_name())));
    }
    let dtype = match typestr.trim_start_matches(['<', '|', '=']) {
        "f4" => DType::F32,
        "f2" => DType::F16,
        "V2" if dtype_name() == "bfloat16" => DType::BF16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u2" if mode.uint16_as_bf16 => DType::BF16,
        _ => return Err(dtype_error(arg, allowed, mode, &dtype_name())),
    };
    if !allowed.contains(&dtype) {
        return Err(dtype_error(arg, allowed, mode, dtype.name()));
    }
    if mode.writable && readonly {
        return Err(PyValueError::new_err(format!("{arg}: the array is read-only")));
    }
    if byte_strides.as_ref().is_some_and(|bs| bs.len() != shape.len()) {
        return Err(malformed("strides"));
    }
    let esize = dtype.size() as isize;
    let strides = match byte_strides {
        None => contiguous_strides(&shape),
        Some(bs) if bs.iter().all(|s| s % esize == 0) => bs.iter().map(|s| s / esize).collect(),
        // Strides that are not whole elements: let numpy make the contiguous copy.
        Some(_) if mode.may_copy => {
            let copy = obj.py().import("numpy")?.call_method1("ascontiguousarray", (obj,))?;
            return from_array_interface(&copy, &copy.getattr("__array_interface__")?, arg, allowed, mode);
        }
        Some(bs) => return Err(PyValueError::new_err(format!("{arg}: strides {bs:?} are not whole elements"))),
    };
    if addr == 0 && shape.iter().product::<usize>() != 0 {
        return Err(PyValueError::new_err(format!("{arg}: null data pointer")));
    }
    Ok(PyTensor::new(addr as *mut u8, dtype, shape, strides, Owner::Object(obj.clone().unbind())))
}

fn from_dlpack(obj: &Bound<'_, PyAny>, arg: &str, allowed: &[DType], mode: Mode) -> PyResult<PyTensor> {
    let v = dlpack::import(obj, arg)?;
    let dtype = v.dtype.map_err(|name| dtype_error(arg, allowed, mode, &name))?;
    if !allowed.contains(&dtype) {
        return Err(dtype_error(arg, allowed, mode, dtype.name()));
    }
    Ok(PyTensor::new(v.ptr, dtype, v.shape, v.strides, Owner::DlPack(v.owner)))
}

pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for (s, &d) in strides.iter_mut().zip(shape).rev() {
        *s = acc;
        acc *= d.max(1) as isize;
    }
    strides
}

/// A non-null pointer aligned for every dtype, for views of zero elements.
pub(crate) fn dangling() -> *mut u8 {
    NonNull::<u64>::dangling().as_ptr() as *mut u8
}

/// Which library a result goes back to: the one the caller's main input came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArrayKind {
    Numpy,
    Torch,
}

impl ArrayKind {
    /// torch for torch tensors, numpy for everything else.
    pub(crate) fn of(obj: &Bound<'_, PyAny>) -> ArrayKind {
        let module = obj.get_type().module().map(|m| m.to_string()).unwrap_or_default();
        if module == "torch" || module.starts_with("torch.") {
            ArrayKind::Torch
        } else {
            ArrayKind::Numpy
        }
    }

    fn dtype_object<'py>(self, py: Python<'py>, dtype: DType) -> PyResult<Bound<'py, PyAny>> {
        match (self, dtype) {
            (ArrayKind::Numpy, DType::BF16) => py.import("ml_dtypes")?.getattr("bfloat16"),
            (ArrayKind::Numpy, d) => py.import("numpy")?.getattr(d.name()),
            (ArrayKind::Torch, d) => py.import("torch")?.getattr(d.name()),
        }
    }

    /// An uninitialised array of this kind, for a kernel to write into.
    pub(crate) fn empty<'py>(self, py: Python<'py>, shape: &[usize], dtype: DType) -> PyResult<Bound<'py, PyAny>> {
        let module = py.import(match self {
            ArrayKind::Numpy => "numpy",
            ArrayKind::Torch => "torch",
        })?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("dtype", self.dtype_object(py, dtype)?)?;
        module.call_method("empty", (PyTuple::new(py, shape)?,), Some(&kwargs))
    }

    /// Hands a Rust-owned buffer to this library without copying it (DLPack).
    pub(crate) fn wrap<'py>(self, py: Python<'py>, native: NativeTensor) -> PyResult<Bound<'py, PyAny>> {
        let module = py.import(match self {
            ArrayKind::Numpy => "numpy",
            ArrayKind::Torch => "torch",
        })?;
        module.call_method1("from_dlpack", (Bound::new(py, native)?,))
    }
}
