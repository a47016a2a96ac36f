"""Files on a local disk or anywhere `tf.io.gfile` reaches (``gs://``, ``s3://``, ``hdfs://``, ``ram://``).

Every path a user can point at cloud storage (``dsnn-train --data/--out``, ``dsnn-eval``,
``dsnn-export``, ``dsnn-lm``, ``dsnn-transcribe``, ``dsnn-bench``, ``dsnn-synth --out``) goes through these
functions (``dsnn-prepare``'s Beam job uses Beam's ``FileSystems``, `pipeline.outdir`). A path with a ``scheme://`` prefix is *remote* and is
handled by `tf.io.gfile` (TensorFlow is imported on the first remote call only); any other path is
local and is handled by the standard library exactly as before (so local behaviour, error types
included, is unchanged and nothing here imports TensorFlow for a local path). Remote errors are
re-raised as the builtin `OSError` subclasses a local call raises (`FileNotFoundError`, ...), so
callers catch one family.

Paths are returned as `pathlib.Path` when local and as the URL string when remote: `pathlib` would
collapse ``gs://b/x`` into ``gs:/b/x``. Use `join`, `name` and `parent` instead of ``/``.

Semantics that differ on object stores (``gs://``), and what this module does about them:

* `atomic_write` writes a temporary sibling ``.NAME.<pid>.<random>.tmp`` and renames it over the
  target. Locally that rename is atomic. On ``gs://`` a rename is a server-side copy then a delete
  of the temporary: a reader sees the old object or the complete new one (an object is replaced in
  one step), never a partial one, but a process killed between the copy and the delete leaves the
  temporary behind.
* `append_text` on ``gs://`` rewrites the whole object each time (objects are immutable); fine for
  the small logs it is used for.
* There are no directories on ``gs://``: `makedirs` leaves an empty ``DIR/`` placeholder object
  (TensorFlow's GCS filesystem does) and `isdir` is true for any prefix with objects under it.
  `rmtree` deletes every object under the prefix, one by one (not atomic).
* Code that needs a real local file (a subprocess that opens the model, an ``mmap``) takes one
  from `local_copy`: a private temporary copy, deleted on exit.

Example:
    >>> run = as_path("gs://bucket/runs/tiny")
    >>> join(run, "checkpoints")
    'gs://bucket/runs/tiny/checkpoints'
    >>> join(as_path("runs/tiny"), "checkpoints")
    PosixPath('runs/tiny/checkpoints')
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import pathlib
import posixpath
import shutil
import tempfile
import threading
import uuid
from typing import Iterator, Optional, Union

PathLike = Union[str, os.PathLike]
AnyPath = Union[pathlib.Path, str]   # what `as_path` returns: a Path (local) or a URL string (remote)


def is_local(path: PathLike) -> bool:
    """True for a plain filesystem path, False for a ``scheme://...`` URL (``gs://``, ``ram://``, ...)."""
    return "://" not in os.fspath(path)


def as_path(path: PathLike) -> AnyPath:
    """``pathlib.Path(path)`` for a local path; the URL string itself for a remote one."""
    return pathlib.Path(path) if is_local(path) else os.fspath(path)


def join(base: PathLike, *parts: str) -> AnyPath:
    """``base / part / ...``: a `pathlib.Path` for a local base, a ``/``-joined URL for a remote one."""
    if is_local(base):
        return pathlib.Path(base).joinpath(*parts)
    return posixpath.join(os.fspath(base), *parts)


def name(path: PathLike) -> str:
    """The last component (``gs://b/run/`` -> ``run``)."""
    return posixpath.basename(os.fspath(path).rstrip("/")) if not is_local(path) else pathlib.Path(path).name


def parent(path: PathLike) -> AnyPath:
    """The directory holding ``path`` (a `pathlib.Path` locally, a URL remotely)."""
    if is_local(path):
        return pathlib.Path(path).parent
    return posixpath.dirname(os.fspath(path).rstrip("/"))


def _gfile():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    return tf.io.gfile


@contextlib.contextmanager
def _os_errors(path: PathLike) -> Iterator[None]:
    """Re-raises TensorFlow's file errors as the builtin `OSError` a local call would raise."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.NotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such file or directory", os.fspath(path)) from None
    except tf.errors.AlreadyExistsError:
        raise FileExistsError(errno.EEXIST, "already exists", os.fspath(path)) from None
    except tf.errors.PermissionDeniedError as error:
        raise PermissionError(errno.EACCES, f"permission denied ({error.message})", os.fspath(path)) from None
    except tf.errors.OpError as error:
        raise OSError(errno.EIO, error.message or type(error).__name__, os.fspath(path)) from None


def exists(path: PathLike) -> bool:
    """Whether a file or directory (remote: an object or a prefix with objects) is at ``path``."""
    if is_local(path):
        return os.path.exists(path)
    with _os_errors(path):
        return _gfile().exists(os.fspath(path))


def isdir(path: PathLike) -> bool:
    """Whether ``path`` is a directory (remote: a prefix with objects under it, or a made directory)."""
    if is_local(path):
        return os.path.isdir(path)
    with _os_errors(path):
        return _gfile().isdir(os.fspath(path))


def isfile(path: PathLike) -> bool:
    """Whether ``path`` is a file (remote: an object)."""
    if is_local(path):
        return os.path.isfile(path)
    with _os_errors(path):
        gfile = _gfile()
        return gfile.exists(os.fspath(path)) and not gfile.isdir(os.fspath(path))


def makedirs(path: PathLike) -> None:
    """Creates ``path`` and its parents if missing (``exist_ok``)."""
    if is_local(path):
        os.makedirs(path, exist_ok=True)
        return
    with _os_errors(path):
        _gfile().makedirs(os.fspath(path))


def listdir(path: PathLike) -> list[str]:
    """The names in directory ``path``, sorted (remote: the entries directly under the prefix)."""
    if is_local(path):
        return sorted(os.listdir(path))
    with _os_errors(path):
        return sorted(entry.rstrip("/") for entry in _gfile().listdir(os.fspath(path)))


@contextlib.contextmanager
def local_copy(path: PathLike) -> Iterator[pathlib.Path]:
    """A local file holding ``path``'s bytes, for code that needs one (a subprocess, an ``mmap``).

    A local ``path`` is yielded as it is. A remote one is copied into a private temporary directory
    under its own name (so ``.name`` is the URL's last component), deleted when the block ends.

    Raises:
        FileNotFoundError: ``path`` does not exist (naming it).
    """
    if is_local(path):
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "no such file or directory", os.fspath(path))
        yield pathlib.Path(path)
        return
    directory = tempfile.mkdtemp(prefix="dsnn-local-copy-")
    try:
        target = pathlib.Path(directory) / name(path)
        copy(path, target)
        yield target
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def read_bytes(path: PathLike) -> bytes:
    """The file's bytes."""
    if is_local(path):
        return pathlib.Path(path).read_bytes()
    with _os_errors(path):
        with _gfile().GFile(os.fspath(path), "rb") as stream:
            return stream.read()


def read_text(path: PathLike) -> str:
    """The file's text (UTF-8)."""
    if is_local(path):
        return pathlib.Path(path).read_text(encoding="utf-8")
    return read_bytes(path).decode("utf-8")


def append_text(path: PathLike, text: str) -> None:
    """Appends ``text`` to the file (created if missing). On ``gs://`` this rewrites the object."""
    if is_local(path):
        with open(path, "a") as stream:
            stream.write(text)
        return
    with _os_errors(path):
        with _gfile().GFile(os.fspath(path), "a") as stream:
            stream.write(text)


def rename(source: PathLike, target: PathLike, overwrite: bool = False) -> None:
    """Moves a file; with ``overwrite`` an existing ``target`` is replaced (locally: atomically).

    Raises:
        FileExistsError: ``target`` exists and ``overwrite`` is False.
    """
    if is_local(source) and is_local(target):
        if not overwrite and os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "already exists", os.fspath(target))
        os.replace(source, target)
        return
    with _os_errors(source):
        _gfile().rename(os.fspath(source), os.fspath(target), overwrite=overwrite)


def remove(path: PathLike, missing_ok: bool = False) -> None:
    """Deletes a file."""
    if is_local(path):
        pathlib.Path(path).unlink(missing_ok=missing_ok)
        return
    try:
        with _os_errors(path):
            _gfile().remove(os.fspath(path))
    except FileNotFoundError:
        if not missing_ok:
            raise


def copy(source: PathLike, target: PathLike) -> None:
    """Copies a file's bytes over ``target`` (either side may be local or remote)."""
    if is_local(source) and is_local(target):
        shutil.copyfile(source, target)
        return
    with _os_errors(source):
        _gfile().copy(os.fspath(source), os.fspath(target), overwrite=True)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status``; elsewhere the only portable way to read it is to set
    it and set it back, which is done under a lock (files another thread creates in that instant
    could still get the temporary mask: call this from one thread there). Used as
    ``os.chmod(path, 0o666 & ~current_umask())``: the mode a new file would get.
    """
    try:
        with open("/proc/self/status", "rb") as status:   # bytes: the process name may be any encoding
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def temporary_name(path: PathLike) -> AnyPath:
    """A fresh temporary sibling of ``path``: ``.NAME.<pid>.<random>.tmp`` (`atomic_write` uses it)."""
    return join(parent(path), f".{name(path)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(path: PathLike, data: Union[bytes, str]) -> None:
    """Writes ``path`` completely under a temporary name, then renames it over ``path``.

    Readers see the old file or the complete new one. Locally the temporary is fsynced and gets the
    usual mode for new files (umask) before ``os.replace``; remotely it is written with `tf.io.gfile`
    and renamed with ``overwrite=True`` (on ``gs://`` a copy, then a delete of the temporary).
    Parent directories are created.

    Args:
        path: The file to write.
        data: Its contents (``str`` is written as UTF-8).
    """
    data = data.encode("utf-8") if isinstance(data, str) else data
    if is_local(path):
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            # mkstemp creates the file 0600; a written output gets the usual mode for new files.
            os.chmod(temporary, 0o666 & ~current_umask())
            os.replace(temporary, path)
        except BaseException:
            pathlib.Path(temporary).unlink(missing_ok=True)
            raise
        return
    temporary = temporary_name(path)
    with _os_errors(path):
        gfile = _gfile()
        gfile.makedirs(parent(path))
        try:
            with gfile.GFile(temporary, "wb") as stream:
                stream.write(data)
            gfile.rename(temporary, os.fspath(path), overwrite=True)
        except BaseException:
            with contextlib.suppress(Exception):
                gfile.remove(temporary)
            raise



def write_png(figure, path: PathLike, dpi: Optional[float] = None) -> None:
    """Saves a matplotlib ``figure`` as PNG to ``path`` (local or a URL) with `atomic_write`: complete or absent."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **({} if dpi is None else {"dpi": dpi}))
    atomic_write(path, buffer.getvalue())


WALK_MAX_DEPTH = 12   # remote `walk_files` looks this many levels below the root


def walk_files(directory: PathLike) -> list[str]:
    """Every file under ``directory`` at any depth, as ``/``-joined paths relative to it, sorted.

    A missing directory has no files (``[]``). Remotely only `WALK_MAX_DEPTH` levels are listed.
    """
    return [relative for relative, _, _ in walk_file_stats(directory)]


def walk_file_stats(root: PathLike) -> list[tuple[str, int, int]]:
    """`walk_files` with sizes: ``(relative posix path, size in bytes, mtime in ns)``, sorted.

    Remote stores may report an mtime of 0 (``ram://``); size and path still identify a file.
    """
    if is_local(root):
        root = pathlib.Path(root)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for filename in filenames:
                full = pathlib.Path(dirpath) / filename
                stat = full.stat()
                found.append((full.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns))
        return sorted(found)
    base = os.fspath(root).rstrip("/")
    gfile = _gfile()
    try:
        if not gfile.isdir(base):
            return []
    except _tf_not_found():   # some filesystems (ram://) raise instead of answering False
        return []
    # One glob per depth rather than `gfile.walk`: a file written without its parent "directory"
    # being made (Beam's uploads) sits under an implicit prefix that some filesystems (ram://) do
    # not list as a child, so a walk would miss it.
    found = {}
    with _os_errors(root):
        for depth in range(1, WALK_MAX_DEPTH + 1):
            for full in gfile.glob(base + "/*" * depth):
                try:
                    stat = gfile.stat(full)
                except _tf_not_found():   # removed meanwhile
                    continue
                if not stat.is_directory:
                    found[full[len(base) + 1:]] = (int(stat.length), int(stat.mtime_nsec))
    return sorted((relative, size, mtime) for relative, (size, mtime) in found.items())


def file_size(path: PathLike) -> int:
    """The file's size in bytes."""
    if is_local(path):
        return os.stat(path).st_size
    with _os_errors(path):
        return int(_gfile().stat(os.fspath(path)).length)


def rmtree(path: PathLike) -> None:
    """Deletes directory ``path`` and everything under it; a missing one is left as it is.

    Remote: every object under the prefix is deleted, one by one.
    """
    if is_local(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)
        return
    with _os_errors(path):
        gfile = _gfile()
        # Files one by one: a directory delete is not atomic on object stores either, and some
        # filesystems (``ram://``) leave a directory's files behind when it is deleted as a whole.
        for relative in walk_files(path):
            with contextlib.suppress(_tf_not_found()):
                gfile.remove(join(path, relative))
        if gfile.exists(os.fspath(path)):
            with contextlib.suppress(Exception):
                gfile.rmtree(os.fspath(path))


def _tf_not_found():
    import tensorflow as tf

    return tf.errors.NotFoundError


def move_tree(source: PathLike, target: PathLike, last: str | None = None) -> None:
    """Moves directory ``source`` to ``target``, which must not exist.

    Locally one ``os.rename`` (atomic). Remotely there is no directory rename: files are renamed one
    by one and the file named ``last`` (relative to ``source``) goes last, so a reader that trusts
    ``target/last`` never sees a partial tree; a move interrupted half way can be finished by calling
    this again (files already moved are kept).
    """
    if is_local(source) and is_local(target):
        os.rename(source, target)
        return
    files = walk_files(source)
    files = [f for f in files if f != last] + [f for f in files if f == last]
    with _os_errors(source):
        gfile = _gfile()
        for relative in files:
            destination = join(target, relative)
            gfile.makedirs(parent(destination))
            gfile.rename(os.fspath(join(source, relative)), os.fspath(destination), overwrite=True)
    rmtree(source)


def copy_tree(source: PathLike, target: PathLike, last: str | None = None) -> None:
    """Copies every file under directory ``source`` into ``target`` (either side local or remote).

    The file named ``last`` (relative path) is copied last (see `move_tree`).
    """
    files = walk_files(source)
    files = [f for f in files if f != last] + [f for f in files if f == last]
    for relative in files:
        destination = join(target, relative)
        makedirs(parent(destination))
        copy(join(source, relative), destination)
