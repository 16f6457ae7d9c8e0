//! Borrowing the bytes of any buffer-protocol object (bytes, bytearray, memoryview,
//! contiguous numpy arrays of any dtype) without copying them.

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
        let mut view = Box::new(MaybeUninit::<ffi::Py_buffer>::uninit());
        // SAFETY: `obj` is a valid object and the interpreter is attached (we hold a
        // `Bound<'py, _>`); `view` points to writable memory for one `Py_buffer`, which
        // `PyObject_GetBuffer` fills completely when it returns 0.
        let rc =
            unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), ffi::PyBUF_SIMPLE) };
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
    /// released; with `PyBUF_SIMPLE` they are contiguous and `len` bytes long.
    pub(crate) fn as_slice(&self) -> &[u8] {
        let len = usize::try_from(self.view.len).unwrap_or(0);
        if len == 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY:
        // - `buf` is non-null and points to `len` contiguous bytes (PyBUF_SIMPLE: no
        //   strides, no suboffsets), alive and not moved while the view is held, which
        //   outlives the returned borrow (it borrows `self`);
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
