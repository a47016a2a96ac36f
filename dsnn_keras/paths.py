"""Guards every command uses before it writes: outputs disjoint from inputs, one writer per directory.

No TensorFlow here: the command-line tools call these before any heavy import or any write.

Remote paths (``gs://...``, any ``scheme://``): `check_disjoint` compares them as normalised URLs
(a remote path never overlaps a local one), and `exclusive_lock` cannot lock them (there is no
``flock`` on an object store, and `tf.io.gfile` has no create-if-absent): it prints a note and runs
the block unlocked; one writer per remote directory is then the scheduler's job.

Example:
    >>> check_disjoint("runs/x", {"--data": "data/an4"}, out_flag="--out")
    >>> with exclusive_lock("runs/x", ".dsnn-train.lock", holder="dsnn-train"):
    ...     pass
"""
from __future__ import annotations

import contextlib
import os
import pathlib
import posixpath
import sys
from typing import Iterator, Mapping, Optional, Union

from dsnn_keras.errors import DsnnError, DsnnUsageError

PathLike = Union[str, os.PathLike]


class PathOverlapError(DsnnUsageError, ValueError):
    """An output path equals, contains or lies inside one of the command's inputs."""


class LockedError(DsnnError, RuntimeError):
    """Another process holds the directory's lock."""


def _remote_key(path: PathLike) -> Optional[tuple[str, str]]:
    """``(scheme, normalised rest)`` of a ``scheme://`` URL, None for a local path."""
    text = os.fspath(path)
    if "://" not in text:
        return None
    scheme, rest = text.split("://", 1)
    return scheme.lower(), posixpath.normpath("/" + rest)


def _resolved(path: PathLike) -> pathlib.Path:
    # strict=False: the output may not exist yet; symlinks in the existing part are followed.
    return pathlib.Path(os.path.expanduser(os.fspath(path))).resolve(strict=False)


def _relation(out, value, within) -> Optional[str]:
    """How ``out`` relates to the input ``value`` (``within(child, parent)`` tests containment), or None."""
    if out == value:
        return "is the same path as"
    if within(value, out):
        return "contains"
    if within(out, value):
        return "is inside"
    return None


def _path_within(child: pathlib.Path, parent: pathlib.Path) -> bool:
    return child == parent or parent in child.parents


def _url_within(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip("/") + "/")


def check_disjoint(out: PathLike, inputs: Mapping[str, Optional[PathLike]], out_flag: str = "--out") -> None:
    """Refuses an output that equals, contains or is inside any input (resolved, symlinks followed).

    Call it before anything is written: a command that later replaces its output directory would
    otherwise delete the input it was given. URLs are compared as normalised strings within one
    scheme; a local path never overlaps a URL.

    Args:
        out: The output path (file or directory; need not exist).
        inputs: ``{flag name: path}`` of the inputs; None values are ignored.
        out_flag: The output's flag name, for the message. Defaults to "--out".

    Raises:
        PathOverlapError: naming both flags and both (resolved) paths.
    """
    out_key = _remote_key(out)
    out_path = _resolved(out) if out_key is None else None
    for flag, value in inputs.items():
        if value is None:
            continue
        in_key = _remote_key(value)
        if out_key is None and in_key is None:
            in_path = _resolved(value)
            relation = _relation(out_path, in_path, _path_within)
            shown_out, shown_in = out_path, in_path
        elif out_key is not None and in_key is not None and out_key[0] == in_key[0]:
            relation = _relation(out_key[1], in_key[1], _url_within)
            shown_out, shown_in = os.fspath(out), os.fspath(value)
        else:
            continue    # a local path and a URL, or two schemes: different stores
        if relation is not None:
            raise PathOverlapError(
                f"{out_flag} {shown_out} {relation} {flag} {shown_in}; refusing to write there "
                f"(the output would replace or change the input). Choose an {out_flag} outside {flag}")


@contextlib.contextmanager
def exclusive_lock(directory: PathLike, name: str, holder: str,
                   remove: bool = False) -> Iterator[Optional[pathlib.Path]]:
    """Holds an exclusive, non-blocking ``flock`` on ``directory/name`` for the ``with`` block.

    The lock is released by the kernel when the process dies (``kill -9`` included), so a stale
    lock file never blocks a later run. After locking, the file at the path must still be the one
    locked (another holder may have removed it meanwhile); otherwise the lock is taken again on the
    new file, which makes ``remove`` safe.

    Args:
        directory: The directory to guard (created if missing).
        name: The lock file's name inside it.
        holder: The command, for the message (e.g. ``"dsnn-train"``).
        remove: Delete the lock file when the block ends (still holding the lock). Defaults to False.

    A remote ``directory`` (``gs://...``) is not locked: a note saying so goes to stderr and the
    block runs unlocked (object stores have no lock a dead process releases; see the module notes).

    Yields:
        The lock file's path (None for a remote directory).

    Raises:
        LockedError: another process holds the lock.
    """
    import fcntl

    if _remote_key(directory) is not None:
        print(f"{holder}: note: {os.fspath(directory)} is not on a local filesystem, so it cannot be locked; "
              f"make sure no other {holder} writes there at the same time", file=sys.stderr, flush=True)
        yield None
        return

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    while True:
        stream = open(path, "a")
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.close()
            raise LockedError(
                f"another {holder} is running on {directory} (lock {path}); wait for it or choose "
                "another output directory") from None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(stream.fileno()), current):
            break
        stream.close()              # removed by its previous holder after we opened it: lock the new one
    try:
        yield path
    finally:
        if remove:
            path.unlink(missing_ok=True)
        fcntl.flock(stream, fcntl.LOCK_UN)
        stream.close()
