import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "configs"


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "print_config.py"), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_prints_merged_config_with_overrides():
    out = run(str(FIXTURES / "child.py"), "--cfg-options", "train.lr=0.5", "model.inner=Inner(a=4)")
    assert out.returncode == 0, out.stderr
    assert "size=64" in out.stdout and "lr=0.5" in out.stdout and "a=4" in out.stdout
    assert "L(Inner)(" in out.stdout


def test_config_error_exits_2_with_message():
    out = run(str(FIXTURES / "typo.py"))
    assert out.returncode == 2
    assert "typo.py" in out.stderr and "'bb'" in out.stderr
