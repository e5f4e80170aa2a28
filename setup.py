"""Build pgsl_ext._C from every source under csrc/. The one place that decides each build fact.

CPU kernels are always built. CUDA kernels are built when the CUDA toolkit (CUDA_HOME or
nvcc) and a CUDA build of torch are both present, or FORCE_CUDA=1; PGSL_EXT_CUDA=0 forces
a CPU-only build. Whether a GPU is visible never matters.

CMakeLists.txt asks this file for the same facts once, at configure time
(``python setup.py --print-cmake-config``, see cmake_config()): the source lists, the CUDA
home, the nvidia-* wheels' include folders, the host and nvcc flags, the default CUDA
architectures and whether to build CUDA kernels. Neither build writes any of them twice.
"""

import glob
import os
import shutil
import sys


def find_cuda_home():
    """A CUDA toolkit folder (bin/nvcc and include/cuda_runtime.h), or None.

    torch.utils.cpp_extension guesses CUDA_HOME from the folder above nvcc, which is wrong when
    nvcc on PATH is a wrapper script (e.g. /usr/local/bin/nvcc); check the candidates instead.
    """
    nvcc = shutil.which("nvcc")
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    for home in filter(None, candidates):
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and os.path.exists(
            os.path.join(home, "include", "cuda_runtime.h")
        ):
            return home
    return None


if find_cuda_home() is not None:  # must be set before torch.utils.cpp_extension is imported
    os.environ["CUDA_HOME"] = find_cuda_home()

from setuptools import setup  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join("csrc")

# Host-compiler flags of the CPU kernels (CMakeLists.txt passes the same): vectorisable maths
# without errno or trapping, and no FMA contraction, so that a matrix's result does not depend
# on which SIMD lane or tail loop computed it.
CPU_FLAGS = ["-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off"]

# nvcc flags of ours; torch.utils.cpp_extension adds its COMMON_NVCC_FLAGS (half-precision
# operator switches, --expt-relaxed-constexpr) itself, and CMake is handed both.
NVCC_FLAGS = ["-lineinfo"]

# Architectures compiled when TORCH_CUDA_ARCH_LIST is unset (torch's syntax): Ampere, Hopper,
# Blackwell (data-centre and consumer), plus PTX for later chips.
DEFAULT_CUDA_ARCHS = "8.0;9.0;10.0;12.0+PTX"


def cuda_arch_list():
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS


def sources(with_cuda):
    """The build's source list: every .cpp under csrc/, and every .cu and cuda/*.cpp with CUDA."""
    files = glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True)
    if not with_cuda:
        files = [f for f in files if os.sep + "cuda" + os.sep not in f]
    else:
        files += glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True)
    return sorted(files)


def want_cuda():
    if os.environ.get("PGSL_EXT_CUDA", "") == "0":
        return False, "PGSL_EXT_CUDA=0"
    if os.environ.get("FORCE_CUDA", "") == "1":
        return True, "FORCE_CUDA=1"
    if cpp_extension.CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build"
    return True, f"CUDA toolkit at {cpp_extension.CUDA_HOME}, torch built with CUDA {torch.version.cuda}"


def nvidia_wheel_includes():
    """Include folders of the installed nvidia-* wheels (cuBLAS, cuSOLVER, ... headers)."""
    found = []
    for entry in sys.path:
        for pattern in ("nvidia/cu*/include", "nvidia/*/include"):
            found += glob.glob(os.path.join(entry, pattern))
    return sorted({os.path.abspath(p) for p in found if os.path.isdir(p)})


def extension():
    with_cuda, why = want_cuda()
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    cxx = ["-O3", "-std=c++20", *CPU_FLAGS, *openmp]
    include_dirs = [os.path.join(ROOT, "csrc", "include")]
    define_macros = []
    kwargs = {}
    if with_cuda:
        os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()
        include_dirs += nvidia_wheel_includes()
        arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
        define_macros += [("PGSL_WITH_CUDA", None), ("PGSL_CUDA_ARCH_LIST", f'"{arch_list}"')]
        kwargs["extra_compile_args"] = {
            "cxx": cxx,
            "nvcc": ["-O3", "-std=c++20", *NVCC_FLAGS],
        }
        builder = cpp_extension.CUDAExtension
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        builder = cpp_extension.CppExtension
    files = sources(with_cuda)
    print(f"pgsl_ext: building {'CPU + CUDA' if with_cuda else 'CPU-only'} kernels ({why})")
    if with_cuda:
        print(f"pgsl_ext: CUDA architectures {os.environ['TORCH_CUDA_ARCH_LIST']}")
    print("pgsl_ext: sources " + " ".join(files))
    return builder(
        name="pgsl_ext._C",
        sources=files,
        include_dirs=include_dirs,
        define_macros=define_macros,
        extra_link_args=openmp,
        **kwargs,
    )


def cmake_config():
    """The build facts CMakeLists.txt uses, as ``NAME=value`` lines (lists joined by ";")."""
    with_cuda, why = want_cuda()
    facts = {
        "PGSL_SOURCES_WITH_CUDA": [p.replace(os.sep, "/") for p in sources(True)],
        "PGSL_SOURCES_WITHOUT_CUDA": [p.replace(os.sep, "/") for p in sources(False)],
        "PGSL_WANT_CUDA": "ON" if with_cuda else "OFF",
        "PGSL_WANT_CUDA_WHY": why,
        "PGSL_CUDA_HOME": find_cuda_home() or "",
        "PGSL_CPU_FLAGS": CPU_FLAGS,
        "PGSL_NVCC_FLAGS": [*NVCC_FLAGS, *cpp_extension.COMMON_NVCC_FLAGS],
        "PGSL_DEFAULT_CUDA_ARCHS": cuda_arch_list(),
        "PGSL_NVIDIA_WHEEL_INCLUDES": nvidia_wheel_includes(),
        "PGSL_TORCH_CMAKE_PREFIX": torch.utils.cmake_prefix_path,
        "PGSL_TORCH_CUDA_VERSION": torch.version.cuda or "",
    }
    return "\n".join(f"{k}={';'.join(v) if isinstance(v, list) else v}" for k, v in facts.items())


if __name__ == "__main__" and sys.argv[1:] == ["--print-cmake-config"]:
    os.chdir(ROOT)  # the source lists are relative to the repository root
    print(cmake_config())
elif __name__ == "__main__":
    setup(
        license="BSD-3-Clause",  # here, not in pyproject.toml: see the comment there
        ext_modules=[extension()],
        cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    )
