"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every temporary file is named ``.<name>.<pid>.<random><suffix>`` beside its target, so a later
run can tell a temporary whose writer is gone (killed with ``kill -9``) from one being written
now, and remove it (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from pathlib import Path

TMP_SUFFIX = ".tmp"


def temporary_name(path: Path, suffix: str = TMP_SUFFIX) -> Path:
    """A fresh temporary path beside ``path`` that carries this process's id."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}{suffix}")


def atomic_write(path, write, suffix: str = TMP_SUFFIX, *, replace: bool = True) -> Path:
    """Write ``path`` by calling ``write(fileobj)`` on a temporary file in the same folder,
    flushing and fsync-ing it, then giving it the final name.

    ``replace=True``: the final name is taken with ``os.replace`` (an existing file is replaced).
    ``replace=False``: the final name is created only if nothing is there (a hard link of the
    finished temporary, which fails if the name exists, a dangling symlink included), so of two
    writers racing for one name exactly one wins; the other gets ``FileExistsError``.
    On any error or signal the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    tmp = temporary_name(path, suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _create_from(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _create_from(tmp: Path, path: Path) -> None:
    """Give the finished ``tmp`` the name ``path`` only if that name is free, then drop ``tmp``."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "exists (use --overwrite to replace it)", str(path)) from None
    except OSError as exc:  # a file system without hard links: reserve the name, then rename over it
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise FileExistsError(errno.EEXIST, "exists (use --overwrite to replace it)", str(path)) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]+(?P<suffix>\..+)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(folder, suffix: str = TMP_SUFFIX, name=None, *, folders: bool = False) -> list[Path]:
    """Remove the temporaries in ``folder`` that end in ``suffix`` and whose writing process no
    longer exists; returns what was removed (one that cannot be removed is left alone).

    ``name``: only temporaries of this target name (a string), of names a predicate accepts (a
    callable), or of any name (None). ``folders``: remove temporary folders (e.g. a Zarr store
    being written) instead of files.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    wanted = name if callable(name) or name is None else (lambda n: n == name)
    for p in entries:
        m = _TMP_RE.match(p.name)
        if not m or not p.name.endswith(suffix) or (wanted is not None and not wanted(m["name"])):
            continue
        if _alive(int(m["pid"])) or p.is_symlink() or not (p.is_dir() if folders else p.is_file()):
            continue
        try:
            if folders:
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed
