"""The stale-temporary sweep removes only what is provably dead; temporaries fit wherever their
target does (tinysr issue #23, items 3 and 10)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tinysr.atomic import STALE_AGE, atomic_write, host_token, remove_stale_temporaries, temporary_name


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _foreign(path, pid):
    """The temporary a writer with ``pid`` in another host or pid namespace would make for ``path``."""
    ours = temporary_name(path, pid=pid)
    other = "fedcba98" if host_token() != "fedcba98" else "abcdef01"
    return ours.with_name(ours.name.replace(f".{pid}.{host_token()}.", f".{pid}.{other}."))


def test_another_namespaces_temporary_is_kept_whatever_its_pid(tmp_path):
    """A writer in a container or on another node sharing the folder: its pid means nothing here,
    dead or alive, so its temporary is never removed; this namespace's dead writer's is."""
    dead = _dead_pid()
    mine_dead = temporary_name(tmp_path / "a.png", pid=dead)
    theirs_dead_here = _foreign(tmp_path / "b.png", dead)  # that pid is free here, alive there
    theirs_alive_here = _foreign(tmp_path / "c.png", os.getpid())
    for p in (mine_dead, theirs_dead_here, theirs_alive_here):
        p.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path) == [mine_dead]
    assert theirs_dead_here.exists() and theirs_alive_here.exists()


def test_a_temporary_without_a_host_token_goes_only_when_far_older_than_any_write(tmp_path):
    dead = _dead_pid()
    fresh = tmp_path / f".a.png.{dead}.0123456789ab.tmp"  # an older tinysr's name: no host token
    old = tmp_path / f".b.png.{dead}.0123456789ab.tmp"
    for p in (fresh, old):
        p.write_bytes(b"half")
    past = time.time() - STALE_AGE - 3600
    os.utime(old, (past, past))
    assert remove_stale_temporaries(tmp_path) == [old]
    assert fresh.exists()


def test_the_host_token_names_this_namespace_in_a_child_too():
    out = subprocess.run([sys.executable, "-c", "from tinysr.atomic import host_token; print(host_token())"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == host_token() and len(host_token()) == 8


def test_a_long_name_fits_its_temporary_and_a_killed_ones_is_found(tmp_path):
    target = tmp_path / ("n" * 240 + ".png")  # 244 characters: the temporary must be shorter than ".<name>.<pid>..."
    seen = []

    def write(f):
        seen.extend(p.name for p in tmp_path.iterdir())
        f.write(b"data")

    atomic_write(target, write, replace=False)
    assert target.read_bytes() == b"data"
    assert len(seen) == 1 and len(seen[0]) < 200 and "~.png." in seen[0]  # cut, its suffix kept
    stale = temporary_name(target, pid=_dead_pid())
    stale.write_bytes(b"half")
    assert remove_stale_temporaries(tmp_path, name=target.name) == [stale]
    assert remove_stale_temporaries(tmp_path, name=lambda n: n.endswith(".png")) == []


def test_a_write_error_names_the_target_not_the_temporary(tmp_path):
    folder = tmp_path / "gone"
    with pytest.raises(FileNotFoundError) as info:
        atomic_write(folder / "x.png", lambda f: f.write(b"x"))
    assert info.value.filename == str(folder / "x.png") and ".tmp" not in str(info.value)


def test_a_writer_in_another_pid_namespace_has_another_token_and_its_temporary_is_kept(tmp_path):
    """A real writer in a pid namespace of its own (as in a container): its pids mean nothing here."""
    import shutil  # noqa: PLC0415

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to start a process in a pid namespace of its own")
    code = ("import sys, time; from pathlib import Path; from tinysr.atomic import temporary_name, host_token\n"
            "t = temporary_name(Path(sys.argv[1]) / 'out.png'); t.write_bytes(b'half'); print(host_token(), t.name,"
            " flush=True); sys.stdin.read()")
    p = subprocess.Popen(["unshare", "--user", "--map-root-user", "--pid", "--fork", sys.executable, "-c", code,
                          str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        line = p.stdout.readline().split()
        if not line:
            pytest.skip(f"cannot start a process in a new pid namespace here: {p.stderr.read().strip()}")
        token, name = line
        assert token != host_token()
        assert remove_stale_temporaries(tmp_path) == [] and (tmp_path / name).exists()
    finally:
        p.stdin.close()
        p.wait(timeout=30)
    assert remove_stale_temporaries(tmp_path) == [] and (tmp_path / name).exists()  # its writer gone there, not here
