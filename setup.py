"""Build pgsl_ext._C from every source under csrc/ (the same glob CMakeLists.txt uses).

CPU kernels are always built. CUDA kernels are built when the CUDA toolkit (CUDA_HOME or
nvcc) and a CUDA build of torch are both present, or FORCE_CUDA=1; PGSL_EXT_CUDA=0 forces
a CPU-only build. Whether a GPU is visible never matters.
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

# Architectures compiled when TORCH_CUDA_ARCH_LIST is unset: Ampere, Hopper, Blackwell
# (data-centre and consumer), plus PTX for later chips.
DEFAULT_CUDA_ARCHS = "8.0;9.0;10.0;12.0+PTX"


def sources(with_cuda):
    """The build's source list: every .cpp under csrc/, and every .cu and cuda/*.cpp with CUDA."""
    files = sorted(glob.glob(os.path.join(CSRC, "**", "*.cpp"), recursive=True))
    if not with_cuda:
        files = [f for f in files if os.sep + "cuda" + os.sep not in f]
    else:
        files += sorted(glob.glob(os.path.join(CSRC, "**", "*.cu"), recursive=True))
    return files


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
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        include_dirs += nvidia_wheel_includes()
        arch_list = os.environ["TORCH_CUDA_ARCH_LIST"]
        define_macros += [("PGSL_WITH_CUDA", None), ("PGSL_CUDA_ARCH_LIST", f'"{arch_list}"')]
        kwargs["extra_compile_args"] = {
            "cxx": cxx,
            "nvcc": ["-O3", "-std=c++20", "-lineinfo"],
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


if __name__ == "__main__":
    setup(
        license="BSD-3-Clause",  # here, not in pyproject.toml: see the comment there
        ext_modules=[extension()],
        cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    )
