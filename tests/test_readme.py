"""Every shell and Python block of the README runs as written on a fresh dataset folder.

The blocks run in order in one temporary folder with its own Minari root, as a newcomer would paste them, with the
training budgets cut down (`--steps`, `--eval-every`, `steps=`) so the whole README takes about a minute; the set-up
blocks (`pip install ...`) are the CI's own install and are not repeated. The Python block runs twice: a second run
must not fail on what the first one wrote.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = [(r"--steps \d+", "--steps 300"), (r"--eval-every \d+", "--eval-every 150"), (r"\bsteps=\d[\d_]*", "steps=300")]


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every fenced block tagged bash or python, in order."""
    return [(m[1], m[2]) for m in re.finditer(r"```(bash|python)\n(.*?)```", README.read_text(), re.S)]


def small(code: str) -> str:
    for pattern, repl in SMALL:
        code = re.sub(pattern, repl, code)
    return code


def test_the_readme_has_its_two_setup_commands_and_runnable_blocks():
    blocks = readme_blocks()
    setup = [c for lang, c in blocks if "pip install" in c]
    assert len(setup) == 2 and setup[0].strip().endswith("pbrl quickstart") and setup[1].strip().endswith("pytest")
    assert any(lang == "python" for lang, _ in blocks) and any("pbrl train" in c for _, c in blocks)


@pytest.mark.slow
@pytest.mark.ci_slow
def test_every_readme_block_runs_as_written(tmp_path):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    for lang, code in readme_blocks():
        if "pip install" in code:
            continue
        code = small(code)
        runs = 1 if lang == "bash" else 2
        for _ in range(runs):
            cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
            proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, f"README {lang} block failed:\n{code}\n--- stderr:\n{proc.stderr[-3000:]}"
            assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
