"""Install the framework-agnostic ``hyptree`` library.

The Dassl trainers (``trainers/``), datasets (``datasets/``), ``train.py`` and the
protocol scripts live beside it in the repository, CoOp-style; they are used from
a checkout and are not installed as packages.
"""
from setuptools import find_packages, setup

setup(
    name="hyptree",
    version="0.1.0",
    description=(
        "Alignment across Trees: hierarchical image/text feature trees aligned on "
        "heterogeneous hyperbolic manifolds, as a plugin for CoOp/MaPLe/PromptSRC"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["hyptree", "hyptree.*"]),
    install_requires=[
        "torch>=2.0",
        "torchvision>=0.15",
        "openai-clip",
        # clip imports pkg_resources, which setuptools 81 removed
        "setuptools<81",
        "yacs",
        "numpy",
        "scipy",
        "tqdm",
        "matplotlib",
        "pillow",
    ],
    extras_require={
        "test": ["pytest", "hypothesis"],
        # Dassl has no release on the package index; this pulls its repository.
        "dassl": ["dassl @ git+https://github.com/KaiyangZhou/Dassl.pytorch.git"],
    },
)
