"""Versions of the packages that made an artifact, for its provenance record.

One helper for `dsnn-prepare`'s dataset.json, `dsnn-eval`'s eval.json and the `.tflite` metadata.
"""
from __future__ import annotations

from importlib import metadata
from typing import Optional, Sequence


def package_versions(distributions: Sequence[str]) -> dict[str, Optional[str]]:
    """Installed version of each distribution, keyed by its import-style name (``-`` → ``_``).

    Args:
        distributions: PyPI distribution names, e.g. ``["dsnn", "tensorflow", "tf-keras"]``.

    Returns:
        ``{"dsnn": "0.1.0", "tensorflow": "2.21.0", "tf_keras": "2.21.0"}``; None for a distribution
        that is not installed.

    Example:
        >>> package_versions(["dsnn", "jiwer"])["jiwer"]
        '4.0.0'
    """
    versions: dict[str, Optional[str]] = {}
    for name in distributions:
        try:
            versions[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.replace("-", "_")] = None
    return versions
