"""Compatibility shim: ``pip install .`` reads everything from pyproject.toml."""

from setuptools import setup

setup()
