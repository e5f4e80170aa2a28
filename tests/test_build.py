"""The build itself: CMake and setup.py compile the same sources, object names cannot clash,
and the installed extension holds what this environment should have built.
"""

import collections
import importlib.util
import os
import re
import shutil
import subprocess
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
        [cmake, "-S", str(ROOT), "-B", str(tmp_path), "-DPGSL_LIST_SOURCES_ONLY=ON"],
        capture_output=True,
        text=True,
        timeout=60,
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


def test_source_file_stems_are_unique():
    # Object files are named by stem (x.cpp and x.cu both make x.o): a clash breaks ninja.
    sources = [p for ext in ("*.cpp", "*.cu") for p in (ROOT / "csrc").rglob(ext)]
    assert sources
    stems = collections.Counter(p.stem for p in sources)
    clashes = {stem: sorted(str(p.relative_to(ROOT)) for p in sources if p.stem == stem)
               for stem, n in stems.items() if n > 1}
    assert not clashes, f"source file stems must be unique under csrc/: {clashes}"


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


def test_cmake_compiles_with_setup_py_cpu_flags(setup_py):
    """Both builds must compile the same arithmetic (e.g. no FMA contraction in either)."""
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for flag in setup_py.CPU_FLAGS:
        assert flag in cmake, f"CMakeLists.txt does not pass {flag} (setup.py's CPU_FLAGS)"
