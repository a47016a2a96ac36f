"""The output directory: refuse to clobber, build in a temporary sibling, then rename into place.

Locally the final step is ``os.rename`` of a complete directory, so a reader sees either no
output or a complete one. With ``--overwrite`` the old directory is first renamed aside and then
deleted. On object stores (``gs://``) there is no directory rename: the files are moved one by one,
``dataset.json`` last, so a reader that waits for ``dataset.json`` never sees a partial dataset.

Temporaries (local): a run owns ``OUT.tmp-XXXXXXXX/`` and holds an exclusive ``flock`` on the
sibling file ``OUT.tmp-XXXXXXXX.lock`` (which also names its pid and host) until it commits or
aborts; during the commit the replaced output is parked at ``OUT.tmp-XXXXXXXX.old``. The kernel
drops the lock when the process dies, ``kill -9`` included, so `start` can tell the temporaries of
a dead run from a live one's and removes them (rolling a half-done commit back to the previous
output); it never touches a name it did not make, nor anything whose lock is held.
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import socket
import uuid

LOG = logging.getLogger("dsnn.prepare")
_LOCKS: dict[str, int] = {}  # temporary directory -> fd holding its lock (this process)


def _remote(path: str) -> bool:
    return "://" in path


def _remote_has_files(directory: str) -> bool:
    from apache_beam.io.filesystems import FileSystems
    return bool(FileSystems.match([directory.rstrip("/") + "/**"], limits=[1])[0].metadata_list)


def _exists(path: str) -> bool:
    if _remote(path):  # an object store has no directories: a prefix with objects under it counts
        from apache_beam.io.filesystems import FileSystems
        return (FileSystems.exists(path.rstrip("/") + "/dataset.json") or FileSystems.exists(path)
                or _remote_has_files(path))
    return os.path.exists(path)


def _check_replaceable(out: str) -> None:
    """``--overwrite`` replaces a prepared dataset (or an empty directory), never anything else.

    Raises:
        FileExistsError: ``out`` is not a directory, or a non-empty one without ``dataset.json``.
    """
    if _remote(out):
        from apache_beam.io.filesystems import FileSystems
        # An empty prefix (e.g. a directory placeholder, as dsnn-job's staging directory leaves) is replaceable.
        if not FileSystems.exists(out.rstrip("/") + "/dataset.json") and _remote_has_files(out):
            raise FileExistsError(
                f"--out {out} is not a prepared dataset (no dataset.json) and objects exist under it; "
                "--overwrite only replaces an earlier dsnn-prepare output. Choose another --out")
        return
    if os.path.islink(out) or not os.path.isdir(out):
        raise FileExistsError(f"--out {out} exists and is not a directory; refusing to replace it")
    if os.listdir(out) and not os.path.isfile(os.path.join(out, "dataset.json")):
        raise FileExistsError(
            f"--out {out} is not a prepared dataset (no dataset.json) and not empty; --overwrite only "
            "replaces an earlier dsnn-prepare output. Move it away or choose another --out")


def _lock_name(tmp: str) -> str:
    return tmp + ".lock"


def _stale_pattern(out: str) -> re.Pattern:
    return re.compile(re.escape(os.path.basename(out)) + r"\.tmp-[0-9a-f]{8}\.lock")


def clean_stale(out: str) -> list[str]:
    """Removes the temporaries that dead runs left for ``out`` (local paths only).

    A temporary is stale when its lock file exists and nobody holds the lock (its owner died). Its
    ``.tmp-XXXXXXXX`` directory is deleted; a parked ``.old`` output is deleted when ``out`` exists and
    renamed back to ``out`` when it does not (the run died inside `commit`). Temporaries without a
    lock file (an older dsnn-prepare's) are only reported.

    Returns:
        The paths removed or restored.
    """
    import fcntl

    out = out.rstrip("/")
    parent = os.path.dirname(os.path.abspath(out))
    if _remote(out) or not os.path.isdir(parent):
        return []
    pattern, removed = _stale_pattern(out), []
    legacy = re.compile(re.escape(os.path.basename(out)) + r"\.tmp-[0-9a-f]{8}")
    for name in sorted(os.listdir(parent)):
        lock = os.path.join(parent, name)
        if not pattern.fullmatch(name):
            if legacy.fullmatch(name) and not os.path.lexists(lock + ".lock"):
                LOG.warning("prepare: leaving %s: it has no lock file, so it may belong to a running older "
                            "dsnn-prepare; delete it if no run is using it", lock)
            continue
        try:
            fd = os.open(lock, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # gone meanwhile, a link, or not ours to open
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # held: a live run
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(lock))
            except FileNotFoundError:
                same = False  # its run finished (and removed it) between our open and our flock
            if not same:
                continue  # removed meanwhile, or another cleaner removed it and a new run reused the name
            tmp = lock[: -len(".lock")]
            old = tmp + ".old"
            if os.path.isdir(old) and not os.path.islink(old):
                if os.path.lexists(out):
                    delete(old)
                    removed.append(old)
                else:
                    os.rename(old, out)
                    LOG.warning("prepare: restored %s from %s (a run died while replacing it)", out, old)
                    removed.append(old)
            if os.path.isdir(tmp) and not os.path.islink(tmp):
                delete(tmp)
                removed.append(tmp)
            os.remove(lock)
            removed.append(lock)
        finally:
            os.close(fd)
    if removed:
        LOG.warning("prepare: removed what a dead run left: %s", ", ".join(removed))
    return removed


def start(out: str, overwrite: bool) -> str:
    """Checks ``out`` and returns a fresh temporary directory next to it, locked by this process.

    First removes the temporaries that dead runs left for ``out`` (`clean_stale`). Release the
    temporary with `commit` or `abort`.

    Raises:
        FileExistsError: when ``out`` exists and ``overwrite`` is False.
    """
    import fcntl

    out = out.rstrip("/")
    if not _remote(out):
        clean_stale(out)
    if _exists(out) and not overwrite:
        raise FileExistsError(f"--out {out} already exists; pass --overwrite to replace it")
    if overwrite and (_exists(out) if _remote(out) else os.path.lexists(out)):
        _check_replaceable(out)
    tmp = f"{out}.tmp-{uuid.uuid4().hex[:8]}"
    if not _remote(tmp):
        os.makedirs(os.path.dirname(os.path.abspath(tmp)), exist_ok=True)
        fd = os.open(_lock_name(tmp), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        created = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, f"dsnn-prepare pid {os.getpid()} on {socket.gethostname()}\n".encode())
            os.mkdir(tmp)
            created = True
        except BaseException:
            os.close(fd)
            if created:
                delete(tmp)
            delete(_lock_name(tmp))
            raise
        _LOCKS[tmp] = fd
    return tmp


def _release(tmp: str) -> None:
    fd = _LOCKS.pop(tmp, None)
    if fd is not None:
        try:
            os.remove(_lock_name(tmp))
        except FileNotFoundError:
            pass
        os.close(fd)


def abort(tmp: str) -> None:
    """Deletes the temporary directory ``tmp`` (from `start`) and releases its lock."""
    delete(tmp + ("/" if _remote(tmp) else ""))
    _release(tmp)


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
    elif os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):  # a file or a link (never followed)
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
    """Moves the finished ``tmp`` directory to ``out`` (replacing an old ``out``) and releases it.

    Locally: the old ``out`` is parked at ``tmp + ".old"``, ``tmp`` renamed to ``out``, the parked
    one deleted. If the second rename fails, the old ``out`` is put back before the error propagates;
    if the process dies in between, the next `start` puts it back (`clean_stale`).
    """
    out = out.rstrip("/")
    if not _remote(out):
        old = None
        if os.path.lexists(out):
            old = tmp + ".old"
            os.rename(out, old)
        try:
            os.rename(tmp, out)
        except BaseException:
            if old:
                os.rename(old, out)
            raise
        if old:
            delete(old)
        _release(tmp)
        return
    from apache_beam.io.filesystems import FileSystems
    delete(out + "/")
    files = [f for f in list_files(tmp) if f != "dataset.json"] + ["dataset.json"]
    FileSystems.rename([join(tmp, f) for f in files], [join(out, f) for f in files])
    delete(tmp + "/")
