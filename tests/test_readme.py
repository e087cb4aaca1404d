"""README.md starts with the two commands, and .ci/run runs exactly the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "python -m pytest -q"


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_readme_starts_with_run_and_test_commands():
    run, test = _readme_commands()[:2]
    assert run.startswith("pip install -e") and "tinysr upscale" in run
    assert test == f'pip install -e ".[test]" && {TEST_COMMAND}'


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    runs = [line.strip() for line in ci if line.strip() and not line.strip().startswith("#")]
    assert runs[-1] == TEST_COMMAND
    assert any('pip install --quiet -e ".[test]"' in line for line in runs)
