"""Shim so that `python setup.py develop` and old pip versions work; metadata: pyproject.toml."""

from setuptools import setup

setup()
