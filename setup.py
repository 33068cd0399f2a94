"""The optional extension mipp._C (project metadata, packages and dependencies are in pyproject.toml).

The extension is plain pybind11 (it never links libtorch: tensors travel as pointers), so it builds against
any torch. Its CUDA part (csrc/*.cu) is compiled only when torch is a CUDA build and an nvcc of the same
major version is found. A failed extension build warns loudly and the install goes on without it (mipp then
runs the pure-torch reference); MIPP_REQUIRE_EXT=1 makes the failure fatal.

Environment: MIPP_REQUIRE_EXT=1 (fail instead of falling back), MIPP_CUDA=0 (never build the CUDA part),
MIPP_CUDA_ARCHS="80;90" (the SM targets; default below), CUDA_HOME / NVCC (where nvcc is).
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
REQUIRE_EXT = os.environ.get("MIPP_REQUIRE_EXT", "0") == "1"
# Targets CUDA 12 and 13 both support (13 dropped sm < 75), plus PTX of the last for newer GPUs.
DEFAULT_CUDA_ARCHS = "75;80;86;89;90"

# -O3 for the vectoriser; -ffp-contract=off so no a*b+c is ever fused, and the digamma series gives the
# same bits on every ISA (the distance loops have no multiply and are exact anyway). No -march: the hot loops
# carry AVX2 clones picked at load time (csrc/common.h), so the .so stays portable. No -ffast-math: it would
# break the exact IEEE comparisons the kernels are specified by.
CXX_FLAGS = ["-O3", "-std=c++17", "-fvisibility=hidden", "-ffp-contract=off", "-pthread"]


def _warn(msg: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\nmipp: WARNING: {msg}\n{bar}\n", file=sys.stderr, flush=True)


def _nvcc():
    explicit = os.environ.get("NVCC")
    if explicit:
        return explicit
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _cuda_lib_dir(nvcc: str) -> str:
    """The toolkit's lib64 holding libcudart_static.a (nvcc may be a wrapper outside the toolkit)."""
    homes = [
        os.environ.get("CUDA_HOME"),
        os.environ.get("CUDA_PATH"),
        os.path.dirname(os.path.dirname(os.path.realpath(nvcc))),
        "/usr/local/cuda",
    ]
    for home in filter(None, homes):
        lib = os.path.join(home, "lib64")
        if os.path.exists(os.path.join(lib, "libcudart_static.a")):
            return lib
    raise RuntimeError(f"libcudart_static.a not found under {homes} (set CUDA_HOME)")


def cuda_plan():
    """(nvcc path, None) when the CUDA part should be built, else (None, why not)."""
    if os.environ.get("MIPP_CUDA", "auto") == "0":
        return None, "disabled by MIPP_CUDA=0"
    try:
        import torch
    except ImportError as exc:
        return None, f"torch is not importable at build time ({exc})"
    if not torch.version.cuda:
        return None, f"torch {torch.__version__} is a CPU build"
    nvcc = _nvcc()
    if not nvcc:
        return None, f"torch is built with CUDA {torch.version.cuda} but no nvcc was found (set CUDA_HOME)"
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+)\.(\d+)", out)
    if not found:
        return None, f"could not read the version of {nvcc}"
    if found.group(1) != torch.version.cuda.split(".")[0]:
        return None, (
            f"nvcc {found.group(1)}.{found.group(2)} does not match torch's CUDA {torch.version.cuda} "
            "(the major versions must agree)"
        )
    return nvcc, None


CUDA_SOURCES = ["digamma_sum_cuda.cu"]  # what a CUDA build compiles; bindings.cpp calls into all of them
STATUS_FILE = "_build_status.json"  # written beside the extension when its build fails: the reason


class IncompleteSourceError(RuntimeError):
    """A planned build lacks a source file (an incomplete sdist): always fatal, never a silent fallback."""


def _write_status(directory: str, reason: str | None) -> None:
    path = os.path.join(directory, STATUS_FILE)
    if reason is None:
        if os.path.exists(path):
            os.remove(path)
        return
    os.makedirs(directory, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"reason": reason}, f)


class OptionalBuildExt(build_ext):
    """Builds mipp._C (with its CUDA objects when planned); on failure warns loudly, records the reason
    beside the package (mipp reports it at run time) and installs without it."""

    def build_extension(self, ext):
        target_dir = os.path.dirname(self.get_ext_fullpath(ext.name))
        try:
            self._configure_openmp(ext)
            self._configure_cuda(ext)
            super().build_extension(ext)
        except IncompleteSourceError:
            raise
        except Exception as exc:  # any failure: compiler missing, nvcc error
            if REQUIRE_EXT:
                raise
            reason = f"building the extension failed ({type(exc).__name__}: {exc})"
            _write_status(target_dir, reason)
            _warn(
                f"{reason}.\nmipp is installed WITHOUT it and runs the slow pure-torch reference on the CPU "
                "(it warns at the first op); mipp.build_info() shows why. Set MIPP_REQUIRE_EXT=1 to make this "
                "fatal."
            )
            return
        _write_status(target_dir, None)

    def _configure_openmp(self, ext):
        """-fopenmp when the compiler has it: the kernels then share torch's libgomp team (csrc/threads.cpp);
        without it they run single-threaded (and say so in build_info)."""
        probe_dir = os.path.join(self.build_temp, "openmp_probe")
        os.makedirs(probe_dir, exist_ok=True)
        probe = os.path.join(probe_dir, "probe.cpp")
        with open(probe, "w") as f:
            f.write("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        try:
            self.compiler.compile([probe], output_dir=probe_dir, extra_postargs=["-fopenmp"])
        except Exception as exc:
            _warn(f"the C++ compiler has no OpenMP ({exc}); the CPU kernels will run on one thread")
            return
        ext.extra_compile_args.append("-fopenmp")
        ext.extra_link_args.append("-fopenmp")

    def _configure_cuda(self, ext):
        nvcc, why_not = cuda_plan()
        if nvcc is None:
            reason = re.sub(r'["\\]', "'", why_not)
            ext.define_macros.append(("MIPP_CUDA_OFF_REASON", f'"{reason}"'))
            print(f"mipp: building without CUDA: {why_not}", file=sys.stderr)
            return
        archs = os.environ.get("MIPP_CUDA_ARCHS", DEFAULT_CUDA_ARCHS).replace(",", ";").split(";")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]
        gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
        obj_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(obj_dir, exist_ok=True)
        missing = [s for s in CUDA_SOURCES if not os.path.exists(os.path.join("csrc", s))]
        if missing:
            raise IncompleteSourceError(
                f"a CUDA build is planned ({nvcc}) but csrc/{missing[0]} is missing: the "
                "source tree or sdist is incomplete"
            )
        for src in [os.path.join("csrc", s) for s in CUDA_SOURCES]:
            obj = os.path.join(obj_dir, os.path.basename(src) + ".o")
            cmd = [
                nvcc,
                "-c",
                src,
                "-o",
                obj,
                "-O3",
                "-std=c++17",
                "-Icsrc",
                "-Xcompiler",
                "-fPIC",
                "-Xcompiler",
                "-fvisibility=hidden",
                *gencode,
            ]
            print(" ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, check=True)
            ext.extra_objects.append(obj)
        ext.library_dirs.append(_cuda_lib_dir(nvcc))
        # The static runtime: the .so needs no libcudart at load time, and a CPU-only machine still imports it.
        ext.libraries += ["cudart_static", "rt", "dl"]
        ext.define_macros.append(("MIPP_WITH_CUDA", "1"))


def extensions():
    try:
        import pybind11
    except ImportError:
        if REQUIRE_EXT:
            raise
        _warn(
            "pybind11 is not installed, so the extension mipp._C is not built (a build without isolation: "
            "pip install pybind11 first). mipp runs the slow pure-torch reference on the CPU."
        )
        _write_status(os.path.join("python", "mipp"), "pybind11 was not installed when mipp was built")
        return []
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not sources:
        raise IncompleteSourceError("csrc/*.cpp is missing: the source tree or sdist is incomplete")
    return [
        Extension(
            "mipp._C",
            sources=sources,
            include_dirs=[pybind11.get_include(), "csrc"],
            depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
            extra_compile_args=CXX_FLAGS,
            extra_link_args=["-pthread"],
            language="c++",
        )
    ]


os.chdir(HERE)
setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
