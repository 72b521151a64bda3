"""The examples in examples/ run as documented."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_custom_converter_example():
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "custom_converter.py")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify passed" in result.stdout
    assert "('com.example', 'FastGelu')" in result.stdout
    assert "case clipped_scale: verify passed" in result.stdout
