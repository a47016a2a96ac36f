"""The output directory: refuse to clobber, build in a temporary sibling, then rename into place.

Locally the final step is ``os.rename`` of a complete directory, so a reader sees either no
output or a complete one. With ``--overwrite`` the old directory is first renamed aside and then
deleted. On object stores (``gs://``) there is no directory rename: the files are moved one by one,
``dataset.json`` last, so a reader that waits for ``dataset.json`` never sees a partial dataset.
"""
from __future__ import annotations

import os
import posixpath
import shutil
import uuid


def _remote(path: str) -> bool:
    return "://" in path


def _exists(path: str) -> bool:
    if _remote(path):
        from apache_beam.io.filesystems import FileSystems
        return FileSystems.exists(path.rstrip("/") + "/dataset.json") or FileSystems.exists(path)
    return os.path.exists(path)


def start(out: str, overwrite: bool) -> str:
    """Checks ``out`` and returns a fresh temporary directory next to it.

    Raises:
        FileExistsError: when ``out`` exists and ``overwrite`` is False.
    """
    out = out.rstrip("/")
    if _exists(out) and not overwrite:
        raise FileExistsError(f"--out {out} already exists; pass --overwrite to replace it")
    tmp = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
    if not _remote(tmp):
        os.makedirs(tmp)
    return tmp


def join(directory: str, *parts: str) -> str:
    return posixpath.join(directory, *parts) if _remote(directory) else os.path.join(directory, *parts)


def write_bytes(path: str, data: bytes) -> None:
    """Writes a small file locally or through Beam's FileSystems."""
    if _remote(path):
        from apache_beam.io.filesystems import FileSystems
        with FileSystems.create(path) as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def read_bytes(path: str) -> bytes:
    if _remote(path):
        from apache_beam.io.filesystems import FileSystems
        with FileSystems.open(path, compression_type="uncompressed") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def delete(path: str) -> None:
    if _remote(path):
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.io.filesystem import BeamIOError
        try:  # a trailing '/' deletes everything under the prefix
            FileSystems.delete([path])
        except BeamIOError:
            pass  # nothing there
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def list_files(directory: str) -> list[str]:
    """Paths of all files under ``directory``, relative to it, sorted."""
    if _remote(directory):
        from apache_beam.io.filesystems import FileSystems
        prefix = directory.rstrip("/") + "/"
        found = FileSystems.match([prefix + "**"])[0].metadata_list
        return sorted(m.path[len(prefix):] for m in found)
    return sorted(os.path.relpath(os.path.join(d, f), directory)
                  for d, _, files in os.walk(directory) for f in files)


def commit(tmp: str, out: str) -> None:
    """Moves the finished ``tmp`` directory to ``out`` (replacing an old ``out``)."""
    out = out.rstrip("/")
    if not _remote(out):
        old = None
        if os.path.exists(out):
            old = f"{out}.old-{uuid.uuid4().hex[:8]}"
            os.rename(out, old)
        os.rename(tmp, out)
        if old:
            delete(old)
        return
    from apache_beam.io.filesystems import FileSystems
    delete(out + "/")
    files = [f for f in list_files(tmp) if f != "dataset.json"] + ["dataset.json"]
    FileSystems.rename([join(tmp, f) for f in files], [join(out, f) for f in files])
    delete(tmp + "/")
