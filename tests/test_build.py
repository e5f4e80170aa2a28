"""The build itself: CMake takes its sources and flags from setup.py, object names cannot clash,
requirements.txt and pyproject.toml agree, and the installed extension holds what this
environment should have built.
"""

import collections
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

import pgsl_ext

ROOT = Path(__file__).resolve().parents[1]
BUILD_INFO_KEYS = {"cuda", "cuda_version", "cuda_arch_list", "openmp", "torch_version", "cxx_standard"}


@pytest.fixture(scope="module")
def setup_py():
    """setup.py as a module, without running setup() (it only runs under __main__).

    Importing it sets CUDA_HOME when it finds a toolkit; the environment is restored after.
    """
    saved = dict(os.environ)
    try:
        spec = importlib.util.spec_from_file_location("pgsl_ext_setup", ROOT / "setup.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return module


def _setup_sources(setup_py, with_cuda, monkeypatch):
    monkeypatch.chdir(ROOT)  # sources() globs relative to the repository root
    return [Path(p).as_posix() for p in setup_py.sources(with_cuda)]


def test_cmake_globs_the_same_sources_as_setup_py(setup_py, tmp_path, monkeypatch):
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    result = subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(tmp_path), "-DPGSL_LIST_SOURCES_ONLY=ON", f"-DPython3_EXECUTABLE={sys.executable}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for with_cuda, name in [(True, "with_cuda"), (False, "without_cuda")]:
        cmake_list = (tmp_path / f"pgsl_sources_{name}.txt").read_text().split()
        expected = sorted(_setup_sources(setup_py, with_cuda, monkeypatch))
        assert cmake_list == expected, f"CMake ({name}) and setup.py disagree on the sources"
    with_cuda = (tmp_path / "pgsl_sources_with_cuda.txt").read_text().split()
    without_cuda = (tmp_path / "pgsl_sources_without_cuda.txt").read_text().split()
    assert any(p.endswith(".cu") for p in with_cuda)
    assert not any("/cuda/" in p or p.endswith(".cu") for p in without_cuda)
    assert set(without_cuda) < set(with_cuda)
    assert "csrc/registration.cpp" in without_cuda and "csrc/python_module.cpp" in without_cuda


def _stem_clashes(patterns):
    """Files under csrc/ matching ``patterns`` whose stems repeat, by stem."""
    files = [p for ext in patterns for p in (ROOT / "csrc").rglob(ext)]
    assert files
    stems = collections.Counter(p.stem for p in files)
    return {stem: sorted(str(p.relative_to(ROOT)) for p in files if p.stem == stem) for stem, n in stems.items() if n > 1}


def test_source_file_stems_are_unique():
    # Object files are named by stem (x.cpp and x.cu both make x.o): a clash breaks ninja.
    clashes = _stem_clashes(("*.cpp", "*.cu"))
    assert not clashes, f"source file stems must be unique under csrc/: {clashes}"


def test_header_file_stems_are_unique():
    # csrc/ and csrc/include/ are both include roots: with two rpca.h, '#include "rpca.h"' means
    # whichever root the compiler tries first, and a reader cannot tell which.
    clashes = _stem_clashes(("*.h", "*.cuh"))
    assert not clashes, f"header file stems must be unique under csrc/: {clashes}"


def test_build_info_keys_and_types():
    info = pgsl_ext.build_info()
    assert isinstance(info, dict)
    assert set(info) == BUILD_INFO_KEYS
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["cxx_standard"], int) and info["cxx_standard"] >= 202002
    # built against the torch that runs it (the C++ ABI is per torch release)
    assert isinstance(info["torch_version"], str)
    assert torch.__version__.split("+")[0] == info["torch_version"]
    if info["cuda"]:
        assert isinstance(info["cuda_version"], str) and re.fullmatch(r"\d+\.\d+", info["cuda_version"])
        assert torch.version.cuda is not None
        assert info["cuda_version"].split(".")[0] == torch.version.cuda.split(".")[0]
        assert isinstance(info["cuda_arch_list"], str) and info["cuda_arch_list"]
    else:
        assert info["cuda_version"] is None and info["cuda_arch_list"] is None


def test_cuda_kernels_built_wherever_setup_py_wants_them(setup_py):
    # On CI (nvcc present, a CUDA torch) the installed extension must hold CUDA kernels,
    # GPU or no GPU: a silent CPU-only build would skip every CUDA test.
    want, why = setup_py.want_cuda()
    if want:
        assert pgsl_ext.build_info()["cuda"], (
            f"setup.py wants CUDA kernels here ({why}), but the installed build has none"
        )


def test_cmake_takes_every_build_fact_from_setup_py(setup_py):
    """Flags, architectures, CUDA home and wheel includes are written once, in setup.py: the
    CMake files only use what `setup.py --print-cmake-config` hands them."""
    config = subprocess.run([sys.executable, str(ROOT / "setup.py"), "--print-cmake-config"], capture_output=True,
                            text=True, check=True, timeout=120).stdout
    facts = dict(line.split("=", 1) for line in config.splitlines())
    assert facts["PGSL_CPU_FLAGS"].split(";") == setup_py.CPU_FLAGS
    assert facts["PGSL_NVCC_FLAGS"].split(";")[: len(setup_py.NVCC_FLAGS)] == setup_py.NVCC_FLAGS
    assert facts["PGSL_DEFAULT_CUDA_ARCHS"] == (os.environ.get("TORCH_CUDA_ARCH_LIST") or setup_py.DEFAULT_CUDA_ARCHS)
    cmake_files = [ROOT / "CMakeLists.txt", ROOT / "tests" / "cpp" / "CMakeLists.txt"]
    text = "\n".join(f.read_text() for f in cmake_files)
    for fact in [*setup_py.CPU_FLAGS, *setup_py.NVCC_FLAGS, setup_py.DEFAULT_CUDA_ARCHS, "nvidia/", "/usr/local/cuda",
                 "GLOB"]:
        assert fact not in text, f"{fact!r} is written in a CMakeLists.txt; it belongs to setup.py alone"


def _requirements(lines):
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line.replace(" ", ""))
    return out


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_requirements_txt_is_pyproject_toml():
    """requirements.txt is the build requirements, dependencies and every extra of
    pyproject.toml, each spelled the same everywhere it appears."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    lists = {
        "build-system.requires": pyproject["build-system"]["requires"],
        "project.dependencies": pyproject["project"]["dependencies"],
        **{f"extra {k}": v for k, v in pyproject["project"]["optional-dependencies"].items()},
    }
    spelled = collections.defaultdict(set)
    for where, reqs in lists.items():
        for r in _requirements(reqs):
            spelled[_name(r)].add(r)
    clashes = {name: sorted(forms) for name, forms in spelled.items() if len(forms) > 1}
    assert not clashes, f"pyproject.toml spells a requirement two ways: {clashes}"
    expected = sorted(form for forms in spelled.values() for form in forms)
    listed = _requirements((ROOT / "requirements.txt").read_text().splitlines())
    assert len(listed) == len(set(listed)), "requirements.txt lists a requirement twice"
    assert sorted(listed) == expected, (
        f"requirements.txt and pyproject.toml disagree: only in requirements.txt {sorted(set(listed) - set(expected))}, "
        f"only in pyproject.toml {sorted(set(expected) - set(listed))}"
    )


# The small-matrix svt / rpca kernels of the "group" design (csrc/cuda/small_matrix_group.cuh)
# and the registers each may use: the most that keeps the occupancy target of 32 resident warps
# per SM with blocks of 4 warps (float32: 65536 / (32 * 32) = 64), and float64's cap of 4 blocks
# per SM (128), whose shared memory limits it to fewer warps anyway (bench/RESULTS.md).
GROUP_KERNEL_REGISTERS = {
    "group_svt_kernelIf": 64,
    "group_svt_kernelId": 128,
    "group_rpca_kernelIf": 64,
    "group_rpca_kernelId": 128,
}


def test_small_matrix_group_kernels_have_no_stack_frame_and_fit_the_registers(setup_py, tmp_path):
    """ptxas -v (sm_90) on the two .cu files: no local-memory stack frame, no spills, registers
    within the occupancy target's budget. Runs wherever nvcc is, GPU or not (CI has one)."""
    cuda_home = setup_py.find_cuda_home()
    if cuda_home is None:
        pytest.skip("no CUDA toolkit (nvcc) found: ptxas's register and stack report needs one")
    nvcc = os.path.join(cuda_home, "bin", "nvcc")
    flags = ["-O3", "-std=c++20", *setup_py.NVCC_FLAGS, *setup_py.cpp_extension.COMMON_NVCC_FLAGS]
    report = ""
    for name in ("svt_kernel.cu", "rpca_kernel.cu"):
        result = subprocess.run(
            [nvcc, *flags, "-arch=sm_90", "-Xptxas", "-v", "-I", str(ROOT / "csrc" / "include"),
             "-I", str(ROOT / "csrc" / "cuda"), "-c", str(ROOT / "csrc" / "cuda" / name),
             "-o", str(tmp_path / (name + ".o"))],
            capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, f"nvcc failed on {name}:\n{result.stdout}{result.stderr}"
        report += result.stdout + result.stderr
    # Per entry function: "Compiling entry function '<mangled>'", then its stack and registers.
    kernels = {}
    for entry in re.split(r"Compiling entry function ", report)[1:]:
        mangled = re.match(r"'(\S+)'", entry).group(1)
        stack = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", entry)
        registers = re.search(r"Used (\d+) registers", entry)
        assert stack and registers, f"unexpected ptxas report for {mangled}:\n{entry}"
        kernels[mangled] = (int(registers.group(1)), *map(int, stack.groups()))
    for kernel, budget in GROUP_KERNEL_REGISTERS.items():
        found = [(m, v) for m, v in kernels.items() if kernel in m]
        assert len(found) == 1, f"ptxas reported {len(found)} entry functions matching {kernel}: {sorted(kernels)}"
        mangled, (registers, stack, spill_stores, spill_loads) = found[0]
        assert (stack, spill_stores, spill_loads) == (0, 0, 0), (
            f"{mangled}: {stack} bytes stack frame, {spill_stores} / {spill_loads} bytes spilled; expected none")
        assert registers <= budget, f"{mangled}: {registers} registers; expected at most {budget}"
