"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Every temporary file is named ``.<name>.<pid>.<host>.<random><suffix>`` beside its target:
``pid`` is the writer's process id and ``host`` (:func:`host_token`) names the machine and pid
namespace it runs in (host name, boot id, pid-namespace id). A later run removes a temporary only
when it is provably dead (:func:`remove_stale_temporaries`): written in this same host and pid
namespace by a process that no longer exists (killed with ``kill -9``). A temporary of another
host or namespace (a container, another node sharing the folder) is never removed, however its
pid looks here; one without a host token (an older tinysr's) only when far older than any write
takes (:data:`STALE_AGE`). A long target name is shortened in its temporary's name, so the
temporary fits wherever the target does.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

TMP_SUFFIX = ".tmp"
# A temporary without a host token (an older tinysr's) is removed only past this age (seconds):
# no write of tinysr's takes a week.
STALE_AGE = 7 * 24 * 3600
# The target name's part of a temporary's name is cut to this many characters (its suffix kept),
# so the temporary's name stays within the 255 bytes of common file systems wherever the target's does.
MAX_NAME_PART = 150


@functools.lru_cache(maxsize=None)
def host_token() -> str:
    """8 hex digits naming this host and pid namespace: a hash of the host name, the kernel's
    boot id and the pid namespace's id (where /proc has them). Two processes share it only
    when their pids name processes of one and the same namespace."""
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    except OSError:
        pass
    try:
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        pass
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]


def _name_part(name: str) -> str:
    """``name`` as a temporary's name carries it: cut to :data:`MAX_NAME_PART` characters, its
    suffix (``.png``) kept, so a sweep that asks for a suffix still finds it."""
    if len(name) <= MAX_NAME_PART:
        return name
    ext = os.path.splitext(name)[1]
    ext = ext if len(ext) <= 16 else ""
    return name[:MAX_NAME_PART - len(ext) - 1] + "~" + ext


def temporary_name(path: Path, suffix: str = TMP_SUFFIX, *, pid: int | None = None) -> Path:
    """A fresh temporary path beside ``path`` that carries the writer's process id (``pid``,
    default this process's) and :func:`host_token`."""
    pid = os.getpid() if pid is None else pid
    return path.with_name(f".{_name_part(path.name)}.{pid}.{host_token()}.{secrets.token_hex(6)}{suffix}")


def atomic_write(path, write, suffix: str = TMP_SUFFIX, *, replace: bool = True) -> Path:
    """Write ``path`` by calling ``write(fileobj)`` on a temporary file in the same folder,
    flushing and fsync-ing it, then giving it the final name.

    ``replace=True``: the final name is taken with ``os.replace`` (an existing file is replaced).
    ``replace=False``: the final name is created only if nothing is there (a hard link of the
    finished temporary, which fails if the name exists, a dangling symlink included), so of two
    writers racing for one name exactly one wins; the other gets ``FileExistsError``.
    On any error or signal the temporary file is removed and ``path`` is left untouched.
    An ``OSError`` of the file system (a read-only or full folder, a name too long) names
    ``path``, never the temporary.
    """
    path = Path(path)
    tmp = temporary_name(path, suffix)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for any new file
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _create_from(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _naming(exc, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` about the target ``path``: the same error (and subclass) with ``path`` as its file
    name, where it is the file system's (has an errno); another ``OSError`` (an encoder's) as it is."""
    if exc.errno is None or (exc.filename is not None and str(exc.filename) == str(path)):
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path))


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


_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<host>[0-9a-f]{8})\.[0-9a-f]{12}(?P<suffix>\..+)$")
_OLD_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{12}(?P<suffix>\..+)$")  # no host token


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


def _dead(p: Path, m: re.Match) -> bool:
    """Whether the temporary ``p`` (its name matched) is provably abandoned: written in this host
    and pid namespace by a process that is gone, or without a host token and older than
    :data:`STALE_AGE`. Another host's or namespace's is never dead to us."""
    if "host" in m.groupdict():
        return m["host"] == host_token() and not _alive(int(m["pid"]))
    try:
        return time.time() - p.lstat().st_mtime > STALE_AGE
    except OSError:
        return False


def remove_stale_temporaries(folder, suffix: str = TMP_SUFFIX, name=None, *, folders: bool = False) -> list[Path]:
    """Remove the temporaries in ``folder`` that end in ``suffix`` and are provably abandoned:
    their writing process, of this host and pid namespace, no longer exists (a temporary of
    another host or namespace is kept, whatever its pid); one without a host token (an older
    tinysr's) only when older than :data:`STALE_AGE`. Returns what was removed (one that cannot
    be removed is left alone).

    ``name``: only temporaries of this target name (a string), of names a predicate accepts (a
    callable), or of any name (None). ``folders``: remove temporary folders (e.g. a Zarr store
    being written) instead of files.
    """
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    wanted = name if callable(name) or name is None else (lambda n: n in (name, _name_part(name)))
    for p in entries:
        m = _TMP_RE.match(p.name) or _OLD_TMP_RE.match(p.name)
        if not m or not p.name.endswith(suffix) or (wanted is not None and not wanted(m["name"])):
            continue
        if p.is_symlink() or not (p.is_dir() if folders else p.is_file()) or not _dead(p, m):
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
