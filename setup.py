"""Shim so Beam's ``--setup_file ./setup.py`` can package this project for Dataflow workers.

All metadata (name, packages, dependencies) lives in pyproject.toml; Beam builds an sdist from
this directory and pip-installs it on every worker, which brings `pipeline` and `dsnn_keras`.
"""
import setuptools

setuptools.setup()
