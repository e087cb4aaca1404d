"""The ``tinysr`` command (tinysr.cli.command): dispatch, help, version, errors, interruption.

Subcommands run in-process through ``main``; stand-in tool modules (written to ``tmp_path``)
check how the dispatcher names a tool (``prog``), and how an import failure or a signal is reported.
"""

import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tinysr
from tinysr.cli.command import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


def _one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line, got {text!r}"
    return lines[0]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"tinysr {tinysr.__version__}\n"


def test_version_matches_pyproject():
    text = (REPO / "pyproject.toml").read_text()
    project = text.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^version = "([^"]+)"', project, re.M).group(1) == tinysr.__version__


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_subcommand(capsys, flag):
    assert main([flag]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tinysr ")
    for name, (_, desc, _) in COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(desc)}$", out, re.M), name
    assert "``" not in out


def test_version_and_help_import_no_numpy():
    code = ("import sys; from tinysr.cli.command import main; "
            "assert main(['--version']) == 0 and main(['--help']) == 0; "
            "heavy = [m for m in ('numpy', 'numba', 'PIL') if m in sys.modules]; assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_python_m_tinysr_names_itself(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tinysr", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"python -m tinysr {tinysr.__version__}\n"


@pytest.mark.parametrize("sub", list(COMMANDS))
def test_each_subcommand_help_names_tinysr_sub(capsys, sub):
    assert main([sub, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tinysr {sub} "), out[:200]


def test_nested_subcommand_help_names_the_whole_command(capsys):
    assert main(["figures", "curve", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: tinysr figures curve ")


@pytest.mark.parametrize("argv, message", [
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["upscal"], "did you mean 'upscale'"),
    ([], "a command is needed"),
    (["--frob"], "unknown option '--frob'"),
])
def test_bad_command_lines_get_one_line_and_status_2(capsys, argv, message):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_line(captured.err)
    assert line.startswith("tinysr: error: ") and message in line


def test_subcommand_usage_errors_name_tinysr_sub(capsys, tmp_path):
    assert main(["upscale"]) == 2
    assert _one_line(capsys.readouterr().err).startswith("tinysr upscale: error: ")
    assert main(["upscale", str(tmp_path / "missing.png"), "-o", str(tmp_path / "out")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("tinysr upscale: error: ") and "missing.png" in line
    assert main(["evaluate", str(tmp_path / "nowhere"), "--bicubic"]) == 2  # a message of the tool's own
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("tinysr evaluate: error: ") and "nowhere" in line


def test_upscale_end_to_end(tmp_path, capsys):
    px = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    src = tmp_path / "tiny.png"
    Image.fromarray(px).save(src)
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "-s", "2"]) == 0
    target = out / "tiny_srcnn_x2.png"
    assert re.fullmatch(rf"\[1/1\] {re.escape(str(target))} \(\d+\.\d s\) tiny.png \(PNG: none\)\n",
                        capsys.readouterr().out)
    with Image.open(target) as im:
        assert im.size == (14, 18) and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), tinysr.upscale(px, 2))


# --- stand-in tool modules -------------------------------------------------------------------

@pytest.fixture
def fake_tool(tmp_path, monkeypatch):
    """``make(source)`` writes a module with ``source``, registers it as ``tinysr fake``, and
    returns its name; the module is forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def make(source: str, before=()):
        name = f"tinysr_fake_tool_{uuid.uuid4().hex}"
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)
        monkeypatch.setitem(COMMANDS, "fake", (name, "a stand-in", tuple(before)))
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


def test_a_tool_gets_its_name_as_prog(fake_tool, capsys):
    fake_tool("def main(argv, prog='fake.py'):\n    print(prog, argv)\n    return 3\n")
    assert main(["fake", "a", "-b"]) == 3
    assert capsys.readouterr().out == "tinysr fake ['a', '-b']\n"


def test_a_tool_with_its_own_subcommands_is_named_after_the_command(fake_tool, capsys):
    fake_tool("def main(argv, prog='fake.py'):\n    print(prog, argv)\n    return 0\n", before=("inner",))
    assert main(["fake", "x"]) == 0
    assert capsys.readouterr().out == "tinysr ['inner', 'x']\n"  # the tool's subcommand adds its name


def test_sys_exit_codes_pass_through(fake_tool, capsys):
    fake_tool("import sys\ndef main(argv, prog):\n    sys.exit(argv[0] if argv[0] == 'boom' else int(argv[0]))\n")
    assert main(["fake", "4"]) == 4
    assert main(["fake", "boom"]) == 1
    assert capsys.readouterr().err == "boom\n"


def test_a_missing_tool_module_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(COMMANDS, "fake", ("tinysr._no_such_tool", "a stand-in", ()))
    assert main(["fake"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("tinysr fake: error: ") and "tinysr._no_such_tool" in line


def test_a_tools_missing_dependency_is_one_line(fake_tool, capsys):
    fake_tool("import tinysr_absent_dependency_xyz\n")
    assert main(["fake"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("tinysr fake: error: ") and "tinysr_absent_dependency_xyz" in line


@pytest.mark.parametrize("source, message", [
    ("raise KeyboardInterrupt\n", "tinysr: interrupted"),  # Ctrl-C while the tool is imported
    ("import os, signal, time\nos.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(30)\n",
     "tinysr: terminated (SIGTERM)"),
    ("def main(argv, prog):\n    raise KeyboardInterrupt\n", "tinysr: interrupted"),
    # a signal whose exception the tool swallowed still ends the command
    ("import os, signal, time\ndef main(argv, prog):\n    try:\n        os.kill(os.getpid(), signal.SIGTERM)\n"
     "        time.sleep(30)\n    except KeyboardInterrupt:\n        pass\n    return 0\n",
     "tinysr: terminated (SIGTERM)"),
])
def test_interruption_is_one_line_and_status_130(fake_tool, capsys, source, message):
    before = signal.getsignal(signal.SIGTERM)
    fake_tool(source)
    assert main(["fake"]) == 130
    captured = capsys.readouterr()
    assert _one_line(captured.err) == message
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("sig, message", [(signal.SIGTERM, "tinysr: terminated (SIGTERM)"),
                                          (signal.SIGINT, "tinysr: interrupted")])
def test_a_signal_to_the_tinysr_program_ends_it_at_once(tmp_path, sig, message):
    """A real process run as the console script runs it (``command.program``): a signal while the
    tool runs ends it with one line and status 130, without waiting for the tool's worker thread
    (the interpreter's shutdown would wait a minute for it; ``python train.py`` ends the same way)."""
    tool = tmp_path / "tinysr_sleepy_tool.py"
    tool.write_text("import threading, time\n"
                    "def main(argv, prog):\n"
                    "    threading.Thread(target=time.sleep, args=(60,)).start()  # not a daemon\n"
                    "    print('ready', flush=True)\n"
                    "    time.sleep(60)\n")
    code = ("import sys; from tinysr.cli import command; "
            "command.COMMANDS['sleepy'] = ('tinysr_sleepy_tool', 'sleeps', ()); "
            "sys.argv = ['tinysr', 'sleepy']; command.program()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**_env(), "PYTHONPATH": str(tmp_path)})
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert _one_line(err) == message


def _env():
    import os  # noqa: PLC0415

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.parametrize("sub", list(COMMANDS))
def test_subcommand_help_is_plain_text(sub, capsys):
    """No reStructuredText markup or Python tuple reprs in what a user reads."""
    assert main([sub, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: tinysr {sub}")
    assert "``" not in text and ":func:" not in text and "default: (" not in text
