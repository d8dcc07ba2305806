// The flat engine's per-step check (see _native.py), as a C++ loop over the parameters.
//
// bound(params, grad_impls, data_ptrs) is true when, for every parameter i,
//   * its data pointer is data_ptrs[i] (it still lives in its slice of the flat buffer), and
//   * for i < len(grad_impls): its .grad is the tensor whose TensorImpl address is grad_impls[i]
//     (its view of the flat gradient buffer), else: its .grad is defined and dense.
// grad_impls and data_ptrs are int64 buffers (NumPy arrays). Anything unexpected - a non-tensor, a
// tensor without storage, an exception from torch - gives false, and the Python path decides.
// impl_addresses(tensors) returns those TensorImpl addresses as int64 bytes.

#include <Python.h>

#include <cstdint>

#include <torch/csrc/autograd/python_variable.h>

namespace {

struct Int64Buffer {
  Py_buffer view{};
  bool ok = false;
  Int64Buffer(PyObject* obj) { ok = PyObject_GetBuffer(obj, &view, PyBUF_C_CONTIGUOUS) == 0; }
  ~Int64Buffer() {
    if (ok) PyBuffer_Release(&view);
  }
  Py_ssize_t size() const { return view.len / static_cast<Py_ssize_t>(sizeof(int64_t)); }
  const int64_t* data() const { return static_cast<const int64_t*>(view.buf); }
};

bool all_bound(PyObject* params, const Int64Buffer& grads, const Int64Buffer& ptrs) {
  const Py_ssize_t count = PyList_GET_SIZE(params);
  const Py_ssize_t staged = grads.size();
  if (ptrs.size() != count || staged > count) return false;
  const int64_t* grad_impl = grads.data();
  const int64_t* data_ptr = ptrs.data();
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* item = PyList_GET_ITEM(params, i);
    if (!THPVariable_Check(item)) return false;
    const at::Tensor& param = THPVariable_Unpack(item);
    if (!param.has_storage()) return false;
    if (reinterpret_cast<int64_t>(param.const_data_ptr()) != data_ptr[i]) return false;
    const at::Tensor& grad = param.grad();
    if (i < staged) {
      if (reinterpret_cast<int64_t>(grad.unsafeGetTensorImpl()) != grad_impl[i]) return false;
    } else if (!grad.defined() || grad.layout() != c10::kStrided) {
      return false;
    }
  }
  return true;
}

PyObject* bound(PyObject* /*module*/, PyObject* args) {
  PyObject *params, *grads_obj, *ptrs_obj;
  if (!PyArg_ParseTuple(args, "O!OO", &PyList_Type, &params, &grads_obj, &ptrs_obj)) return nullptr;
  Int64Buffer grads(grads_obj), ptrs(ptrs_obj);
  if (!grads.ok || !ptrs.ok) return nullptr;
  bool result = false;
  try {
    result = all_bound(params, grads, ptrs);
  } catch (...) {
    result = false;
  }
  if (result) Py_RETURN_TRUE;
  Py_RETURN_FALSE;
}

PyObject* impl_addresses(PyObject* /*module*/, PyObject* args) {
  PyObject* tensors;
  if (!PyArg_ParseTuple(args, "O!", &PyList_Type, &tensors)) return nullptr;
  const Py_ssize_t count = PyList_GET_SIZE(tensors);
  PyObject* out = PyBytes_FromStringAndSize(nullptr, count * static_cast<Py_ssize_t>(sizeof(int64_t)));
  if (out == nullptr) return nullptr;
  auto* addresses = reinterpret_cast<int64_t*>(PyBytes_AS_STRING(out));
  for (Py_ssize_t i = 0; i < count; ++i) {
    PyObject* item = PyList_GET_ITEM(tensors, i);
    if (!THPVariable_Check(item)) {
      Py_DECREF(out);
      PyErr_Format(PyExc_TypeError, "impl_addresses: item %zd is not a tensor", i);
      return nullptr;
    }
    addresses[i] = reinterpret_cast<int64_t>(THPVariable_Unpack(item).unsafeGetTensorImpl());
  }
  return out;
}

PyMethodDef methods[] = {
    {"bound", bound, METH_VARARGS, "bound(params, grad_impls, data_ptrs) -> bool"},
    {"impl_addresses", impl_addresses, METH_VARARGS, "impl_addresses(tensors) -> bytes of int64"},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_descentlab_bound_check", nullptr, -1, methods};

}  // namespace

PyMODINIT_FUNC PyInit__descentlab_bound_check(void) { return PyModule_Create(&module_def); }
