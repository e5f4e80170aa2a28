// The Python module `pgsl_ext._C`. Importing it loads the op library (which
// registers the ops with the dispatcher) and exposes what this build holds.
#include <torch/extension.h>
#include <torch/version.h>

#ifdef PGSL_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#ifndef PGSL_CUDA_ARCH_LIST
#define PGSL_CUDA_ARCH_LIST ""
#endif

namespace {

py::dict build_info() {
  py::dict info;
#ifdef PGSL_WITH_CUDA
  info["cuda"] = true;
  info["cuda_version"] = std::to_string(CUDART_VERSION / 1000) + "." +
                         std::to_string((CUDART_VERSION % 1000) / 10);
  info["cuda_arch_list"] = std::string(PGSL_CUDA_ARCH_LIST);
#else
  info["cuda"] = false;
  info["cuda_version"] = py::none();
  info["cuda_arch_list"] = py::none();
#endif
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  info["torch_version"] = std::string(TORCH_VERSION);
  info["cxx_standard"] = static_cast<long>(__cplusplus);
  return info;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pgsl_ext compiled ops (registered under torch.ops.pgsl_ext)";
  m.def("build_info", &build_info,
        "What this build of pgsl_ext holds: CUDA kernels (and the toolkit version and "
        "architectures they were compiled for), OpenMP, and the torch it was built against.");
}
