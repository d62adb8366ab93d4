// The Python module pycgn._C: importing it loads this library, whose TORCH_LIBRARY
// blocks register the pycgn operators. It exposes no Python functions itself.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
