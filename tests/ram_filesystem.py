"""Beam's FileSystems on TensorFlow's ``ram://`` store, so one URL reaches both sides in a test.

TensorFlow's ``ram://`` filesystem goes through the same `tf.io.gfile` code as ``gs://``; Beam has no
in-memory filesystem of its own. Importing this module registers `RamFileSystem` (scheme ``ram``)
with Beam (`FileSystems.get_filesystem` finds every `FileSystem` subclass), backed by the same
process-wide ``ram://`` store, so ``dsnn-prepare --out ram://x`` (Beam: `FileSystems`,
``WriteToTFRecord``, ``WriteToText``) writes what ``dsnn-train --data ram://x`` (TensorFlow) reads.
Like GCS it has no directories (``has_dirs`` is False: a "directory" is a prefix).

Test-only: the store lives in one process, so the Beam runner must run in-process (the local
FnApiRunner does). TensorFlow's ``ram://`` lists only the files directly in a directory, so listing a
prefix globs each depth below it (up to `MAX_DEPTH` levels: ample for a prepared dataset).
"""
from __future__ import annotations

import io
import posixpath

from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem

MAX_DEPTH = 8


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


class _Upload(io.BytesIO):
    """A writable buffer stored at ``path`` when closed (like an object-store upload)."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def close(self) -> None:
        if not self.closed:
            with _gfile().GFile(self._path, "wb") as stream:
                stream.write(self.getvalue())
        super().close()


class RamFileSystem(FileSystem):
    """Beam `FileSystem` for ``ram://`` URLs, stored in TensorFlow's in-process RAM filesystem."""

    @classmethod
    def scheme(cls) -> str:
        return "ram"

    def join(self, basepath: str, *paths: str) -> str:
        return posixpath.join(basepath, *paths)

    def split(self, path: str) -> tuple[str, str]:
        path = path.rstrip("/")
        return posixpath.dirname(path), posixpath.basename(path)

    def mkdirs(self, path: str) -> None:
        _gfile().makedirs(path)

    def has_dirs(self) -> bool:
        return False

    def _files_under(self, prefix: str) -> list[str]:
        gfile = _gfile()
        base = posixpath.dirname(prefix) if not prefix.endswith("/") else prefix.rstrip("/")
        found = []
        for depth in range(1, MAX_DEPTH + 1):
            for path in gfile.glob(base + "/*" * depth):
                if path.startswith(prefix) and not gfile.isdir(path):
                    found.append(path)
        return sorted(set(found))

    def _list(self, dir_or_prefix: str):
        for path in self._files_under(dir_or_prefix):
            yield self.metadata(path)

    def _wrap(self, raw, path: str, compression_type: str):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return self._wrap(_Upload(path), path, compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        gfile = _gfile()
        if not gfile.exists(path) or gfile.isdir(path):
            raise BeamIOError(f"no such file: {path}", {path: FileNotFoundError(path)})
        with gfile.GFile(path, "rb") as stream:
            return self._wrap(io.BytesIO(stream.read()), path, compression_type)

    def _pairs(self, sources, targets):
        for source, target in zip(sources, targets):
            if source.endswith("/"):
                for path in self._files_under(source):
                    yield path, target + path[len(source):]
            else:
                yield source, target

    def copy(self, source_file_names, destination_file_names) -> None:
        errors = {}
        for source, target in self._pairs(source_file_names, destination_file_names):
            try:
                _gfile().copy(source, target, overwrite=True)
            except Exception as error:  # noqa: BLE001 - reported per file, as Beam's filesystems do
                errors[(source, target)] = error
        if errors:
            raise BeamIOError("copy failed", errors)

    def rename(self, source_file_names, destination_file_names) -> None:
        errors = {}
        for source, target in self._pairs(source_file_names, destination_file_names):
            try:
                _gfile().rename(source, target, overwrite=True)
            except Exception as error:  # noqa: BLE001
                errors[(source, target)] = error
        if errors:
            raise BeamIOError("rename failed", errors)

    def exists(self, path: str) -> bool:
        return _gfile().exists(path)

    def size(self, path: str) -> int:
        return _gfile().stat(path).length

    def last_updated(self, path: str) -> float:
        return _gfile().stat(path).mtime_nsec / 1e9

    def checksum(self, path: str) -> str:
        return str(self.size(path))

    def metadata(self, path: str) -> FileMetadata:
        stat = _gfile().stat(path)
        return FileMetadata(path, stat.length, stat.mtime_nsec / 1e9)

    def delete(self, paths) -> None:
        """Deletes files; a path ending in ``/`` (or naming a prefix) deletes everything under it."""
        gfile = _gfile()
        errors = {}
        for path in paths:
            prefix = path if path.endswith("/") else path + "/"
            files = [path] if not path.endswith("/") and gfile.exists(path) and not gfile.isdir(path) \
                else self._files_under(prefix)
            marker = gfile.isdir(prefix.rstrip("/"))   # a directory made by mkdirs (an entry of its own)
            if not files and not marker:
                errors[path] = FileNotFoundError(path)
            for name in files:
                gfile.remove(name)
            if marker and (path.endswith("/") or not files):
                try:
                    gfile.rmtree(prefix.rstrip("/"))
                except Exception:  # noqa: BLE001 - an implicit directory (files only) has no entry to remove
                    pass
        if errors:
            raise BeamIOError("delete failed", errors)


def new_root(tag: str = "t") -> str:
    """A fresh, empty ``ram://`` directory URL (the store is shared by the whole test process)."""
    import uuid

    return f"ram://{tag}-{uuid.uuid4().hex[:8]}"


def upload_tree(local_dir, url: str) -> str:
    """Copies every file under the local ``local_dir`` to ``url/<relative path>``; returns ``url``."""
    import pathlib

    gfile = _gfile()
    root = pathlib.Path(local_dir)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            target = posixpath.join(url, *path.relative_to(root).parts)
            gfile.makedirs(posixpath.dirname(target))
            gfile.copy(str(path), target, overwrite=True)
    return url


def files_under(url: str) -> list[str]:
    """Every file under ``url/`` at any depth (``tf.io.gfile.listdir`` on ``ram://`` skips implicit
    subdirectories, so this globs each depth)."""
    return RamFileSystem(None)._files_under(url.rstrip("/") + "/")
