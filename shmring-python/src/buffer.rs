//! Borrowing the bytes of any buffer-protocol object (bytes, bytearray, memoryview,
//! contiguous numpy arrays of any dtype) without copying them, and strided views of
//! arrays (for images).

use std::ffi::c_void;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

use pyo3::ffi;
use pyo3::prelude::*;

/// A `PyBUF_SIMPLE` view of a Python object: its bytes as one contiguous `&[u8]`,
/// whatever the element type. Released (and the object unpinned) on drop.
///
/// Not `Send`: it must be released with the interpreter attached, so it is created and
/// dropped on the calling thread; only the `&[u8]` from [`ByteView::as_slice`] goes into
/// `py.detach`.
pub(crate) struct ByteView<'py> {
    view: Box<ffi::Py_buffer>,
    _py: PhantomData<Python<'py>>,
    _not_send: PhantomData<*mut c_void>,
}

impl<'py> ByteView<'py> {
    /// Requests a simple (contiguous, byte-addressed) buffer from `obj`. Objects without
    /// the buffer protocol raise `TypeError`; non-contiguous arrays raise `BufferError`.
    pub(crate) fn get(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        Self::request(obj, ffi::PyBUF_SIMPLE)
    }

    /// Requests a view with `flags`, which must ask for a contiguous buffer (all the
    /// `PyBUF_*` requests this crate makes do).
    fn request(obj: &Bound<'py, PyAny>, flags: std::os::raw::c_int) -> PyResult<Self> {
        let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::uninit());
        // SAFETY: `obj` is a valid object and the interpreter is attached (we hold a
        // `Bound<'py, _>`); `view` points to writable memory for one `Py_buffer`, which
        // `PyObject_GetBuffer` fills completely when it returns 0.
        let rc = unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), flags) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: `PyObject_GetBuffer` returned 0, so it initialised the whole struct;
        // `MaybeUninit<T>` has the layout of `T`.
        let view = unsafe { Box::from_raw(Box::into_raw(view).cast::<ffi::Py_buffer>()) };
        Ok(ByteView {
            view,
            _py: PhantomData,
            _not_send: PhantomData,
        })
    }

    /// The object's bytes.
    ///
    /// The exporter keeps them alive and at a fixed address until this view is
    /// released; every view this module requests is contiguous, `len` bytes long.
    pub(crate) fn as_slice(&self) -> &[u8] {
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY:
        // - `buf` is non-null and points to `len` contiguous bytes (every request asks
        //   for a contiguous buffer: PyBUF_SIMPLE or PyBUF_C_CONTIGUOUS), alive and not
        //   moved while the view is held, which outlives the returned borrow (it
        //   borrows `self`);
        // - a held export also forbids resizing (bytearray and numpy raise BufferError);
        // - the bytes are read-only for us. A writable exporter (bytearray, numpy) can
        //   still be changed by another thread while we copy with the GIL released; that
        //   race is the caller's (documented on `Writer.write`) and at worst makes the
        //   frame's bytes a mix of old and new (a CRC mismatch for readers), never an
        //   out-of-bounds access: the length is fixed while the export is held.
        unsafe { std::slice::from_raw_parts(self.view.buf.cast::<u8>(), len) }
    }
}

impl Drop for ByteView<'_> {
    fn drop(&mut self) {
        // SAFETY: the view was filled by a successful `PyObject_GetBuffer` and is released
        // exactly once, here, on the thread that holds the `'py` token (so the
        // interpreter is attached: `ByteView` is not `Send`, and callers never drop it
        // inside `py.detach`).
        unsafe { ffi::PyBuffer_Release(&mut *self.view) };
    }
}

/// A strided view (`PyBUF_RECORDS_RO`: any strides, with shape and format) of a
/// buffer-protocol object: what `VideoWriter.write` reads an image from.
#[cfg(feature = "video")]
pub(crate) struct StridedView<'py> {
    bytes: ByteView<'py>,
}

#[cfg(feature = "video")]
impl<'py> StridedView<'py> {
    /// Requests a strided view with shape and format; objects without the buffer
    /// protocol raise `TypeError`.
    pub(crate) fn get(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        Ok(StridedView {
            bytes: ByteView::request(obj, ffi::PyBUF_RECORDS_RO)?,
        })
    }

    /// The address of element `[0, 0, ...]` (other elements may lie below it when a
    /// stride is negative).
    pub(crate) fn ptr(&self) -> *const u8 {
        self.bytes.view.buf.cast::<u8>().cast_const()
    }

    /// Size of one element in bytes.
    pub(crate) fn itemsize(&self) -> usize {
        usize::try_from(self.bytes.view.itemsize).unwrap_or(0)
    }

    /// The struct-module format of one element (`"B"` for `uint8`).
    pub(crate) fn format(&self) -> String {
        let format = self.bytes.view.format;
        if format.is_null() {
            // A NULL format means unsigned bytes.
            return String::from("B");
        }
        // SAFETY: PyBUF_FORMAT was requested, so a non-null `format` is a NUL-terminated
        // string owned by the exporter and valid while the view is held (it outlives
        // this call, which copies it).
        unsafe { std::ffi::CStr::from_ptr(format) }
            .to_string_lossy()
            .into_owned()
    }

    /// The array's shape and strides in bytes (empty for a 0-d array).
    pub(crate) fn shape_and_strides(&self) -> (Vec<usize>, Vec<isize>) {
        let view = &self.bytes.view;
        let ndim = usize::try_from(view.ndim).unwrap_or(0);
        if ndim == 0 || view.shape.is_null() {
            return (Vec::new(), Vec::new());
        }
        // SAFETY: PyBUF_RECORDS_RO includes PyBUF_ND, so a non-null `shape` points to
        // `ndim` Py_ssize_t values owned by the exporter and valid while the view is held.
        let shape: Vec<usize> = unsafe { std::slice::from_raw_parts(view.shape, ndim) }
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect();
        let strides = if view.strides.is_null() {
            c_strides(&shape, self.itemsize())
        } else {
            // SAFETY: PyBUF_STRIDES was requested, so a non-null `strides` points to
            // `ndim` Py_ssize_t values owned by the exporter, valid while the view is held.
            unsafe { std::slice::from_raw_parts(view.strides, ndim) }.to_vec()
        };
        (shape, strides)
    }
}

/// The byte strides of a C-contiguous array of `shape` with `itemsize`-byte elements.
#[cfg(feature = "video")]
pub(crate) fn c_strides(shape: &[usize], itemsize: usize) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut step = itemsize as isize;
    for (stride, &dim) in strides.iter_mut().zip(shape).rev() {
        *stride = step;
        step = step.saturating_mul(dim as isize);
    }
    strides
}
