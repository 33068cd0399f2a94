"""mipp: packages `mipp` (from python/mipp) and `mipp_kernels`; the extension mipp._C is optional."""
from setuptools import setup

setup(
    name="mipp",
    version="0.1.0",
    description="Exact KSG k-NN mutual information for PyTorch and the MIPP pruner",
    packages=["mipp", "mipp.pruning", "mipp_kernels"],
    package_dir={"mipp": "python/mipp", "mipp.pruning": "python/mipp/pruning", "mipp_kernels": "mipp_kernels"},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "triton": ["triton>=3.2"],
        "test": ["pytest>=8", "scipy", "scikit-learn", "triton>=3.2"],
    },
)
