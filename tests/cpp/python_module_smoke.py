"""Smoke test of the CMake-built Python module `_C` (run by ctest, not pytest).

    python python_module_smoke.py <path of _C.so> <ON|OFF: built with CUDA> <arch list or "">

The arch list comes with "," for ";" (ctest arguments are a CMake list).

Loads it by path, without importing the installed pgsl_ext package (whose own _C would register
the same ops a second time), checks build_info() and runs an op through torch.ops.
"""

import importlib.util
import sys

import torch

path, with_cuda = sys.argv[1], sys.argv[2].upper() in ("ON", "1", "TRUE", "YES")
arch_list = sys.argv[3].replace(",", ";")
spec = importlib.util.spec_from_file_location("_C", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)

info = dict(module.build_info())
print(info)
assert info["cuda"] is with_cuda, f"build_info()['cuda'] is {info['cuda']}, expected {with_cuda}"
assert info["cuda_arch_list"] == (arch_list if with_cuda else None), info
assert info["torch_version"] == torch.__version__.split("+")[0], info
assert info["cxx_standard"] >= 202002, info

y = torch.ops.pgsl_ext.soft_threshold(torch.tensor([-3.0, 0.5, 2.0]), 1.0)
assert y.tolist() == [-2.0, 0.0, 1.0], y
print("python_module_smoke: ok")
