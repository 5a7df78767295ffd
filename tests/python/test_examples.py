"""The examples run: the Python shot script, and mypy accepts it against the package's types."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "python", "generate_shot.py")


def test_generate_shot_example_writes_a_shot(tmp_path):
    result = subprocess.run([sys.executable, EXAMPLE, "--out", str(tmp_path), "--preview"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    preview = tmp_path / "preview"
    assert (preview / "shot.mp4").stat().st_size > 0 and (preview / "shot.json").exists()
    assert sorted(p.name for p in preview.glob("shot.*.png"))[0] == "shot.1001.png"


def mypy(*files):
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--disallow-untyped-defs", *files],
                          capture_output=True, text=True, timeout=600)


def test_mypy_accepts_the_examples(tmp_path):
    pytest.importorskip("mypy")
    result = mypy(EXAMPLE, os.path.join(ROOT, "examples", "python", "sample_gmm.py"))
    assert result.returncode == 0, result.stdout[-3000:]
    # and it does read derrumbe's types: a misuse is reported
    wrong = tmp_path / "wrong.py"
    wrong.write_text("import derrumbe\n\n\ndef f() -> int:\n    return derrumbe.Shot('s.json').render()\n")
    result = mypy(str(wrong))
    assert result.returncode == 1 and "ShotResult" in result.stdout, result.stdout[-3000:]
