"""Atomic file and folder writes with the permissions a plain ``open()`` would give.

``tempfile`` creates files ``0600`` and folders ``0700`` (private to the owner), which is right for
secrets but wrong for run folders, checkpoints and benchmark results that other users of a shared
workstation, a web server or a Space container should be able to read. Everything here is
written under a temporary name in the target's own folder and renamed with ``os.replace`` (atomic
on POSIX and Windows), then given the mode the process umask allows (usually ``0644``/``0755``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any training thread runs,
    # instead of flipping the process-wide mask on every write from those threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process umask, read once at import.
UMASK = _read_umask()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so that a reader never sees half a file: a temporary file
    beside it, flushed to disk, then renamed over ``path``; mode ``0666 & ~umask``. Creates the
    parent folders. Returns ``path`` as a ``Path``.

    Raises:
        OSError: the disk refused the write (the temporary file is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def staging_dir(target: str | Path) -> Path:
    """A new empty folder beside ``target`` (``.<name>.tmp-XXXX``) to build its content in before
    ``os.replace``-ing it into place; mode ``0777 & ~umask``, not ``mkdtemp``'s ``0700``. Creates
    ``target``'s parent folders.

    Raises:
        OSError: the folder could not be created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    os.chmod(path, 0o777 & ~UMASK)
    return path


def publish_permissions(folder: str | Path) -> None:
    """Give every file under ``folder`` mode ``0666 & ~umask`` and every folder ``0777 & ~umask``
    (libraries that write through ``tempfile`` leave ``0600`` files behind)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~UMASK)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~UMASK)


def replace_folder(staging: str | Path, target: str | Path) -> Path:
    """Publish a folder built in ``staging`` (:func:`staging_dir`) as ``target``: permissions fixed
    (:func:`publish_permissions`), an existing ``target`` moved aside, ``staging`` renamed into place
    with ``os.replace``, then the old folder removed. A reader never sees half a folder.

    Raises:
        OSError: the rename failed; the old ``target`` is put back first. ``staging`` is left for
            the caller to remove.
    """
    staging, target = Path(staging), Path(target)
    old = None
    try:
        publish_permissions(staging)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{staging.name.rsplit('-', 1)[-1]}")
            os.replace(target, old)
        os.replace(staging, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
