//! Reading the frame given to `VideoWriter.write`: a uint8 `(H, W, 3|4)` image, with an
//! optional leading batch axis of 1, from any of
//! - the buffer protocol with any strides (numpy arrays, including flipped views),
//! - `__dlpack__` (torch CPU tensors, JAX and CuPy host arrays),
//! - `__array_interface__` (numpy's older array protocol),
//!
//! without copying it: the result is a pointer to element `[0, 0, 0]` and byte strides,
//! valid while the [`Image`] (which keeps the exporter's view or object alive) lives.

use std::ffi::c_void;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::buffer::{c_strides, StridedView};

/// DLPack device types a CPU can read (`kDLCPU`, `kDLCUDAHost` pinned host memory,
/// `kDLROCMHost`, `kDLCUDAManaged`).
const DLPACK_HOST_DEVICES: [i32; 4] = [1, 3, 11, 13];
/// DLPack's `kDLUInt` type code.
const DLPACK_UINT: u8 = 1;

/// A frame's pixels, borrowed from the object passed to `write`.
pub(crate) struct Image<'py> {
    /// Keeps the memory alive: the buffer view, or the exporting object / DLPack capsule.
    _keep: Keep<'py>,
    /// Element `[0, 0, 0]`.
    pub(crate) ptr: *const u8,
    /// `(height, width, channels)` after dropping a batch axis of 1.
    pub(crate) shape: [usize; 3],
    /// Byte strides of the three axes (any sign).
    pub(crate) strides: [isize; 3],
}

/// What keeps an image's memory alive (never read: held until the image is dropped).
struct Keep<'py> {
    _view: Option<StridedView<'py>>,
    _object: Option<Bound<'py, PyAny>>,
}

impl<'py> Keep<'py> {
    fn view(view: StridedView<'py>) -> Self {
        Keep {
            _view: Some(view),
            _object: None,
        }
    }

    fn object(object: Bound<'py, PyAny>) -> Self {
        Keep {
            _view: None,
            _object: Some(object),
        }
    }
}

/// The Python type name of `obj`, for error messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// DLPack's device type numbers, named.
fn device_name(device: i32) -> String {
    match device {
        2 => "cuda".into(),
        4 => "opencl".into(),
        7 => "vulkan".into(),
        8 => "metal".into(),
        9 => "vpi".into(),
        10 => "rocm".into(),
        14 => "oneapi".into(),
        other => format!("device type {other}"),
    }
}

impl<'py> Image<'py> {
    /// Reads `obj`'s layout; errors name `write` and say what to pass instead.
    pub(crate) fn get(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        // The buffer protocol first: numpy exports any strides (and read-only arrays,
        // which numpy's DLPack export refuses).
        match StridedView::get(obj) {
            Ok(view) => {
                let format = view.format();
                if view.itemsize() != 1 || !matches!(format.as_str(), "B" | "=B" | "<B" | ">B" | "|B") {
                    return Err(PyValueError::new_err(format!(
                        "write: frame must hold uint8 pixels, not elements of format {format:?} ({} bytes); convert it first, e.g. frame.astype(numpy.uint8)",
                        view.itemsize()
                    )));
                }
                let (shape, strides) = view.shape_and_strides();
                let ptr = view.ptr();
                return Self::new(Keep::view(view), ptr, &shape, &strides);
            }
            Err(e) if !e.is_instance_of::<PyTypeError>(py) => {
                return Err(PyValueError::new_err(format!(
                    "write: cannot read the frame's memory ({e}); pass a numpy array, e.g. numpy.asarray(frame)"
                )))
            }
            Err(_) => {}
        }
        if obj.hasattr("__dlpack__")? {
            return Self::from_dlpack(obj);
        }
        if obj.hasattr("__array_interface__")? {
            return Self::from_array_interface(obj);
        }
        if obj.hasattr("__cuda_array_interface__")? {
            return Err(PyValueError::new_err(format!(
                "write: the frame ({}) is in GPU memory; VideoWriter reads frames from CPU memory: pass a host copy (cupy.asnumpy(frame), frame.cpu() for torch)",
                type_name(obj)
            )));
        }
        Err(PyTypeError::new_err(format!(
            "write: frame must be a uint8 (height, width, 3 or 4) array (numpy array, torch CPU tensor, or any object with the buffer protocol, __dlpack__ or __array_interface__), not {}",
            type_name(obj)
        )))
    }

    fn from_dlpack(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if obj.hasattr("__dlpack_device__")? {
            let (device, index): (i32, i64) = obj.call_method0("__dlpack_device__")?.extract()?;
            if !DLPACK_HOST_DEVICES.contains(&device) {
                return Err(PyValueError::new_err(format!(
                    "write: the frame ({}) is on {}:{index}; VideoWriter reads frames from CPU memory: pass frame.cpu() (torch), cupy.asnumpy(frame) (CuPy) or jax.device_get(frame) (JAX)",
                    type_name(obj),
                    device_name(device)
                )));
            }
        }
        let capsule = obj.call_method0("__dlpack__").map_err(|e| {
            PyValueError::new_err(format!(
                "write: the frame's __dlpack__ failed ({e}); for a torch tensor that requires grad pass frame.detach()"
            ))
        })?;
        let name = c"dltensor";
        // SAFETY: `capsule` is a live object; PyCapsule_GetPointer checks that it is a
        // capsule named "dltensor" (an unconsumed DLPack tensor) and sets an exception
        // and returns NULL otherwise.
        let managed = unsafe { pyo3::ffi::PyCapsule_GetPointer(capsule.as_ptr(), name.as_ptr()) };
        if managed.is_null() {
            let cause = PyErr::take(obj.py()).map(|e| e.to_string()).unwrap_or_default();
            return Err(PyValueError::new_err(format!(
                "write: the frame's __dlpack__ did not return a DLPack tensor capsule ({cause}); pass numpy.asarray(frame)"
            )));
        }
        // SAFETY: a "dltensor" capsule holds a `DLManagedTensor*` (DLPack's ABI, stable
        // since v0.2); its `dl_tensor` and the shape/strides arrays it points to stay
        // valid until the tensor's deleter runs, which happens only when the capsule is
        // destroyed (we do not rename it, so its destructor still owns the tensor) and
        // the capsule is kept alive in `Keep` as long as this image.
        let tensor = unsafe { &(*managed.cast::<DLManagedTensor>()).dl_tensor };
        if !DLPACK_HOST_DEVICES.contains(&tensor.device.device_type) {
            return Err(PyValueError::new_err(format!(
                "write: the frame is on {}:{}; VideoWriter reads frames from CPU memory: pass frame.cpu() (torch) or a numpy copy",
                device_name(tensor.device.device_type),
                tensor.device.device_id
            )));
        }
        if (tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes) != (DLPACK_UINT, 8, 1) {
            return Err(PyValueError::new_err(format!(
                "write: frame must hold uint8 pixels, not DLPack dtype code {} with {} bits; convert it first, e.g. frame.to(torch.uint8)",
                tensor.dtype.code, tensor.dtype.bits
            )));
        }
        let ndim = usize::try_from(tensor.ndim).unwrap_or(0);
        if ndim > 8 || tensor.shape.is_null() && ndim > 0 {
            return Err(PyValueError::new_err(format!(
                "write: frame must be a (height, width, 3 or 4) array, not a {ndim}-dimensional tensor"
            )));
        }
        // SAFETY: `shape` points to `ndim` int64 values, and `strides`, when not NULL, to
        // `ndim` more (in elements, here bytes); both live as long as the capsule.
        let shape: Vec<usize> = (0..ndim)
            .map(|i| usize::try_from(unsafe { *tensor.shape.add(i) }).unwrap_or(0))
            .collect();
        let strides: Vec<isize> = if tensor.strides.is_null() {
            c_strides(&shape, 1)
        } else {
            // SAFETY: as above.
            (0..ndim).map(|i| unsafe { *tensor.strides.add(i) } as isize).collect()
        };
        let ptr = tensor
            .data
            .cast::<u8>()
            .cast_const()
            .wrapping_add(tensor.byte_offset as usize);
        Self::new(Keep::object(capsule), ptr, &shape, &strides)
    }

    fn from_array_interface(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let bad = |what: String| {
            PyValueError::new_err(format!(
                "write: the frame's __array_interface__ {what}; pass numpy.asarray(frame)"
            ))
        };
        let interface = obj.getattr("__array_interface__")?;
        let interface = interface.cast::<PyDict>().map_err(|_| bad("is not a dict".into()))?;
        let get = |key: &str| -> PyResult<Option<Bound<'py, PyAny>>> {
            Ok(interface.get_item(key)?.filter(|v| !v.is_none()))
        };
        let typestr: String = get("typestr")?.ok_or_else(|| bad("has no typestr".into()))?.extract()?;
        if !matches!(typestr.as_str(), "|u1" | "<u1" | ">u1") {
            return Err(PyValueError::new_err(format!(
                "write: frame must hold uint8 pixels (typestr \"|u1\"), not {typestr:?}; convert it first, e.g. frame.astype(numpy.uint8)"
            )));
        }
        let shape: Vec<usize> = get("shape")?.ok_or_else(|| bad("has no shape".into()))?.extract()?;
        let data = get("data")?.ok_or_else(|| bad("has no data pointer".into()))?;
        let data = data
            .cast::<PyTuple>()
            .map_err(|_| bad("data is not a (pointer, read-only) tuple".into()))?;
        let address: usize = data.get_item(0)?.extract()?;
        if address == 0 {
            return Err(bad("data pointer is NULL".into()));
        }
        let strides: Vec<isize> = match get("strides")? {
            Some(s) => s.extract()?,
            None => c_strides(&shape, 1),
        };
        if strides.len() != shape.len() {
            return Err(bad(format!(
                "has {} strides for {} dimensions",
                strides.len(),
                shape.len()
            )));
        }
        Self::new(Keep::object(obj.clone()), address as *const u8, &shape, &strides)
    }

    fn new(keep: Keep<'py>, ptr: *const u8, shape: &[usize], strides: &[isize]) -> PyResult<Self> {
        let (shape, strides) = match (shape, strides) {
            ([1, rest @ ..], [_, rest_strides @ ..]) if rest.len() == 3 => (rest, rest_strides),
            ([n, _, _, _], _) => {
                return Err(PyValueError::new_err(format!(
                    "write: takes one frame, got a batch of {n} (shape {shape:?}); write each one: for f in frames: video.write(f)"
                )))
            }
            _ => (shape, strides),
        };
        let ([h, w, c], [sh, sw, sc]) = (shape, strides) else {
            return Err(PyValueError::new_err(format!(
                "write: frame must be a (height, width, 3) RGB or (height, width, 4) RGBA uint8 array, not shape {shape:?}"
            )));
        };
        Ok(Image {
            _keep: keep,
            ptr,
            shape: [*h, *w, *c],
            strides: [*sh, *sw, *sc],
        })
    }

    /// The lowest and one-past-highest byte offsets from `ptr` that elements occupy.
    pub(crate) fn extent(&self) -> (isize, isize) {
        let (mut low, mut high) = (0isize, 1isize);
        for (&n, &s) in self.shape.iter().zip(&self.strides) {
            let reach = s.saturating_mul(n.saturating_sub(1) as isize);
            if reach < 0 {
                low = low.saturating_add(reach);
            } else {
                high = high.saturating_add(reach);
            }
        }
        (low, high)
    }
}

/// DLPack's `DLDevice`.
#[repr(C)]
struct DLDevice {
    device_type: i32,
    device_id: i32,
}

/// DLPack's `DLDataType`.
#[repr(C)]
struct DLDataType {
    code: u8,
    bits: u8,
    lanes: u16,
}

/// DLPack's `DLTensor`.
#[repr(C)]
struct DLTensor {
    data: *mut c_void,
    device: DLDevice,
    ndim: i32,
    dtype: DLDataType,
    shape: *mut i64,
    strides: *mut i64,
    byte_offset: u64,
}

/// DLPack's `DLManagedTensor` (only `dl_tensor` is read; the producer's capsule
/// destructor calls `deleter`).
#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    _manager_ctx: *mut c_void,
    _deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}
