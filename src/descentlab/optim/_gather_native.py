"""The fused path's table of a param group, read in C: the same tests as :func:`._fused.gather`'s Python
reading, without Python bytecode per tensor.

Per step, nothing kept: the function reads ``group["params"]``, each parameter's ``.grad`` (the
attribute, as Python reads it) and ``state[p]`` (``states[p]``, so a ``defaultdict`` makes an empty one, as
Python's reading does) afresh, and reaches each tensor through the C++ extension API
(``THPVariable_Unpack``: the ``at::Tensor`` a Python tensor holds). It takes the usual group only: every
parameter either without a gradient (skipped, as the Python reading skips it) or a plain
``torch.Tensor``/``Parameter`` of one float dtype, dense, contiguous, on the CPU, with a plain gradient
and every buffer of its shape and dtype already in its state (and a 0-d CPU float ``step`` where the rule
counts steps). Anything else — a subclass, another dtype, a buffer still to make or replaced by a strided
view, a state that is not a ``dict``, an inference tensor outside InferenceMode, an exception from any
call — returns "not taken", and the Python reading (:func:`._fused.gather`: column by column or row by
row) reads the group instead, with its own outcome; a ``KeyboardInterrupt`` raised by Python code the
read runs (``Tensor.__hash__``, a state mapping's ``__missing__``) is raised, not swallowed. So this reader
changes the time of a step, never what it computes; a test compares its tables with the Python
reading's on groups built to hit every test.

Built once per machine, torch version and Python ABI (about 20 s: the extension headers); if it cannot
be built, the Python reading serves every group, with the same numbers. ``DESCENTLAB_NATIVE_GATHER=0`` turns it off.
"""

from __future__ import annotations

import ctypes
import threading
from array import array
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from . import _codegen, _native

TEMPLATE = r"""
#include <Python.h>
#include <torch/csrc/autograd/python_variable.h>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr Py_ssize_t fixed = FIXED_COLUMNS;  // element count, step, its kind, hyper row, param, grad

// 1: float32, 2: float64, 0: any other dtype (the row's kind of step, and the table's dtype)
int kind_of(c10::ScalarType type) {
  return type == c10::ScalarType::Float ? 1 : type == c10::ScalarType::Double ? 2 : 0;
}

// memory that holds the tensor's values: no negative bit (its memory holds minus its values) and an
// address where it has elements (an efficient zero tensor has none)
bool as_stored(const at::Tensor& t) {
  return !t.is_neg() && !t.is_conj() && (t.data_ptr() != nullptr || t.numel() == 0);
}

// a tensor the step may write: an inference tensor outside InferenceMode is not (torch's in-place op
// raises; the Python reading leaves it to the core, which raises torch's error)
bool writable(const at::Tensor& t) {
  return !t.is_inference() || c10::InferenceMode::is_enabled();
}

// a dense contiguous CPU tensor of this dtype and shape (the tests the Python reading makes)
bool plain(const at::Tensor& t, c10::ScalarType type, c10::IntArrayRef shape) {
  return t.layout() == c10::kStrided && t.scalar_type() == type && t.is_cpu() && t.is_contiguous()
         && t.sizes().equals(shape) && as_stored(t);
}

PyObject* interned(PyObject** slot, const char* text) {
  if (*slot == nullptr) *slot = PyUnicode_InternFromString(text);
  return *slot;
}

// a new reference, released when the row is read (or given up)
struct Ref {
  PyObject* object;
  ~Ref() { Py_XDECREF(object); }
};

// new references to the tensors the kernel will write (parameters, buffers, steps), released at the end
struct Written {
  std::vector<PyObject*> objects;
  void add(PyObject* tensor) {
    Py_INCREF(tensor);
    objects.push_back(tensor);
  }
  // what torch's in-place ops do (torch.autograd.graph.increment_version): a graph that saved one of
  // these tensors before the step refuses backward after it (every one is writable(): no error here)
  void bump() const {
    for (PyObject* tensor : objects) THPVariable_Unpack(tensor).unsafeGetTensorImpl()->bump_version();
  }
  ~Written() {
    for (PyObject* tensor : objects) Py_DECREF(tensor);
  }
};

PyObject* grad_name = nullptr;
PyObject* step_name = nullptr;

// -1: not taken (the Python reading follows); else the number of rows written to meta (columns of n rows)
// params: a tuple (a snapshot of the group's list: Python code run by states[p] cannot change it)
int64_t read(PyObject* params, PyObject* states, PyObject* names, int64_t counts, PyTypeObject* tensor_type,
             PyTypeObject* parameter_type, std::vector<int64_t>& meta, std::vector<Py_ssize_t>& taken,
             int* kind_out) {
  if (!PyTuple_CheckExact(params) || !PyTuple_CheckExact(names)) return -1;
  const Py_ssize_t n = PyTuple_GET_SIZE(params);
  const Py_ssize_t slots = PyTuple_GET_SIZE(names);
  const Py_ssize_t complete = slots + (counts ? 1 : 0);
  const bool stateful = states != Py_None;
  if (!stateful && complete != 0) return -1;
  PyObject* grad_key = interned(&grad_name, "grad");
  PyObject* step_key = interned(&step_name, "step");
  if (grad_key == nullptr || step_key == nullptr) return -1;
  c10::ScalarType dtype = c10::ScalarType::Undefined;
  meta.assign(n * (fixed + slots), 0);
  taken.assign(n, 0);
  int64_t rows = 0;
  Written written;
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* param = PyTuple_GET_ITEM(params, i);
    if (Py_TYPE(param) != tensor_type && Py_TYPE(param) != parameter_type) return -1;
    Ref grad{PyObject_GetAttr(param, grad_key)};
    if (grad.object == nullptr) return -1;
    if (grad.object == Py_None) continue;  // no gradient: no row (as the Python reading)
    if (Py_TYPE(grad.object) != tensor_type) return -1;
    const at::Tensor& p = THPVariable_Unpack(param);
    const at::Tensor& g = THPVariable_Unpack(grad.object);
    if (dtype == c10::ScalarType::Undefined) {
      dtype = p.scalar_type();
      if (kind_of(dtype) == 0) return -1;
    }
    if (!plain(p, dtype, p.sizes()) || !plain(g, dtype, p.sizes()) || !writable(p)) return -1;
    int64_t step_address = 0, step_kind = 0;
    const int64_t row = rows;
    if (stateful) {
      Ref held{PyObject_GetItem(states, param)};  // a defaultdict makes {} (as states[p] does)
      PyObject* state = held.object;
      if (state == nullptr || !PyDict_CheckExact(state) || PyDict_GET_SIZE(state) != complete) {
        return -1;  // a state to make (the Python reading makes it), or other keys
      }
      if (counts) {
        PyObject* step = PyDict_GetItemWithError(state, step_key);
        if (step == nullptr || Py_TYPE(step) != tensor_type) return -1;
        const at::Tensor& s = THPVariable_Unpack(step);
        step_kind = s.layout() == c10::kStrided ? kind_of(s.scalar_type()) : 0;
        if (step_kind == 0 || !s.is_cpu() || s.dim() != 0 || !as_stored(s) || !writable(s)) return -1;
        step_address = reinterpret_cast<int64_t>(s.data_ptr());
        written.add(step);
      }
      for (Py_ssize_t k = 0; k < slots; ++k) {
        PyObject* buffer = PyDict_GetItemWithError(state, PyTuple_GET_ITEM(names, k));
        if (buffer == nullptr || Py_TYPE(buffer) != tensor_type) return -1;
        const at::Tensor& b = THPVariable_Unpack(buffer);
        if (!plain(b, dtype, p.sizes()) || !writable(b)) return -1;
        meta[(fixed + k) * n + row] = reinterpret_cast<int64_t>(b.data_ptr());
        written.add(buffer);
      }
    }
    meta[0 * n + row] = p.numel();
    meta[1 * n + row] = step_address;
    meta[2 * n + row] = step_kind;
    meta[3 * n + row] = 0;  // hyper-parameter row 0
    meta[4 * n + row] = reinterpret_cast<int64_t>(p.data_ptr());
    meta[5 * n + row] = reinterpret_cast<int64_t>(g.data_ptr());
    taken[row] = i;
    written.add(param);
    rows += 1;
  }
  written.bump();  // only once every row is taken: a group given up changes nothing
  if (rows < n) {  // columns of n rows -> columns of `rows` rows (moving down: memmove in column order)
    for (Py_ssize_t c = 1; c < fixed + slots; ++c) {
      std::memmove(meta.data() + c * rows, meta.data() + c * n, rows * sizeof(int64_t));
    }
  }
  *kind_out = kind_of(dtype);
  return rows;
}

// (kind, the table's bytes, the rows' parameters) or None
PyObject* result(PyObject* params, int64_t rows, Py_ssize_t columns, const std::vector<int64_t>& meta,
                 const std::vector<Py_ssize_t>& taken, int kind) {
  Ref table{PyBytes_FromStringAndSize(reinterpret_cast<const char*>(meta.data()),
                                      static_cast<Py_ssize_t>(rows * columns * sizeof(int64_t)))};
  Ref rows_params{PyList_New(rows)};
  if (table.object == nullptr || rows_params.object == nullptr) return nullptr;
  for (int64_t r = 0; r < rows; ++r) {
    PyObject* param = PyTuple_GET_ITEM(params, taken[r]);
    Py_INCREF(param);
    PyList_SET_ITEM(rows_params.object, r, param);
  }
  return Py_BuildValue("(iOO)", kind, table.object, rows_params.object);
}

}  // namespace

// an ordinary error is cleared (the caller's Python check meets it again); KeyboardInterrupt and the
// like stay set, and ctypes (PyDLL) raises them after the call
void clear_ordinary_error() {
  if (PyErr_Occurred() != nullptr && PyErr_ExceptionMatches(PyExc_Exception)) PyErr_Clear();
}

// 1: every gradient there is a plain strided tensor; -1: not known here (the Python check decides)
extern "C" int64_t dl_all_dense(PyObject* params, PyObject* tensor_type) {
  if (!PyList_CheckExact(params) || interned(&grad_name, "grad") == nullptr) {
    clear_ordinary_error();
    return -1;
  }
  try {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(params); ++i) {
      PyObject* param = PyList_GET_ITEM(params, i);
      Py_INCREF(param);  // held while its attribute is read (Python code could change the list)
      Ref held{param};
      Ref grad{PyObject_GetAttr(param, grad_name)};
      if (grad.object == Py_None) continue;
      if (grad.object == nullptr || Py_TYPE(grad.object) != reinterpret_cast<PyTypeObject*>(tensor_type)
          || THPVariable_Unpack(grad.object).layout() != c10::kStrided) {
        clear_ordinary_error();
        return -1;
      }
    }
  } catch (...) {
    clear_ordinary_error();
    return -1;
  }
  return 1;
}

extern "C" PyObject* dl_gather(PyObject* params, PyObject* states, PyObject* names, int64_t counts,
                               PyObject* tensor_type, PyObject* parameter_type) {
  std::vector<int64_t> meta;
  std::vector<Py_ssize_t> taken;
  int kind = 0;
  PyObject* out = nullptr;
  try {
    Ref snapshot{PyList_CheckExact(params) ? PyList_AsTuple(params) : nullptr};
    const int64_t rows = snapshot.object == nullptr ? -1 : read(
        snapshot.object, states, names, counts, reinterpret_cast<PyTypeObject*>(tensor_type),
        reinterpret_cast<PyTypeObject*>(parameter_type), meta, taken, &kind);
    if (rows >= 0) out = result(snapshot.object, rows, fixed + PyTuple_GET_SIZE(names), meta, taken, kind);
  } catch (...) {  // any C++ error: not taken, the Python reading decides
    Py_XDECREF(out);
    out = nullptr;
  }
  if (out == nullptr) {
    if (PyErr_Occurred() != nullptr && !PyErr_ExceptionMatches(PyExc_Exception)) {
      return nullptr;  // KeyboardInterrupt, SystemExit: raised (ctypes raises what is set)
    }
    PyErr_Clear();  // an ordinary error: not taken, the Python reading meets it again
    Py_INCREF(Py_None);
    out = Py_None;
  }
  return out;
}
"""
SOURCE = TEMPLATE.replace("FIXED_COLUMNS", str(_codegen.META_FIXED + 2))
"""Columns (:data:`._codegen.META_FIXED`): element count, step address, step kind, hyper-parameter row,
parameter, gradient, then one per buffer."""

CFLAGS = ("-O2",)
DISABLE_VAR = "DESCENTLAB_NATIVE_GATHER"
_LOCK = threading.Lock()
_GATHER_ARGS = [ctypes.py_object, ctypes.py_object, ctypes.py_object, ctypes.c_int64, ctypes.py_object,
                ctypes.py_object]
_DTYPES = {1: torch.float32, 2: torch.float64}


@dataclass(frozen=True)
class Reader:
    """The library's two functions: the group's table, and the gradients' layout check."""

    gather: Any
    all_dense: Any


_READER: list[Reader | None] = []
"""This process's reader, once built or found unbuildable."""


def reader() -> Reader | None:
    """The loaded reader (built on first use), or None where it is off or cannot be built."""
    if _native.switched_off(DISABLE_VAR):
        return None
    if _READER:
        return _READER[0]
    with _LOCK:
        if not _READER:
            library, _problem, _seconds = _native.build(SOURCE, "the native table reader", CFLAGS, (), {},
                                                        python_api=True, prefix="descentlab_reader")
            _READER.append(None if library is None else Reader(
                _native.function(library, "dl_gather", _GATHER_ARGS, ctypes.py_object),
                _native.function(library, "dl_all_dense", [ctypes.py_object, ctypes.py_object], ctypes.c_int64)))
    return _READER[0]


def all_dense(params: list[torch.Tensor]) -> bool | None:
    """True when every gradient of ``params`` there is a plain strided tensor; None when not known here
    (no reader built yet — this check never builds it: only a fused step does —, or a gradient of another
    layout or type: the caller's Python check decides)."""
    native = _READER[0] if _READER and not _native.switched_off(DISABLE_VAR) else None
    if native is None:
        return None
    return True if native.all_dense(params, torch.Tensor) == 1 else None


def read_group(native: Reader, params: list[torch.Tensor], states: MutableMapping[torch.Tensor, Any] | None,
               names: Sequence[str], counts: bool) -> tuple[torch.dtype, array, list[torch.Tensor]] | None:
    """The group's rows as (dtype, column-major table, the parameters of the rows), or None when the
    reader does not take the group (the Python reading follows). ``states`` None: the rule keeps none."""
    read = native.gather(params, states, tuple(names), int(counts), torch.Tensor, torch.nn.Parameter)
    if read is None:
        return None
    kind, table, taken = read
    meta = array("q")
    meta.frombytes(table)
    return _DTYPES.get(kind, torch.float32), meta, taken


def gather_native(group: Mapping[str, Any], states: MutableMapping[torch.Tensor, Any] | None,
                  names: Sequence[str], counts: bool) -> tuple[torch.dtype, array, list[torch.Tensor]] | None:
    """:func:`read_group` with the process's reader; None where there is none or it does not take the group."""
    native = reader()
    if native is None:
        return None
    return read_group(native, group["params"], states, names, counts)
