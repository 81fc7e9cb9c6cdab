"""Packages for setuptools: gpudl's own, plus the top-level kernels/ folder shipped as gpudl._kernels."""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["gpudl", "gpudl.*"]) + ["gpudl._kernels"],
    package_dir={"gpudl._kernels": "kernels"},
)
