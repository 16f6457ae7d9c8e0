"""The README's Python example, run as written (in a child interpreter, so it sees only
what a user's script would). scripts/test.d/40-deploy.sh runs this against the package
installed from its sdist in a fresh virtualenv."""
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def test_readme_has_a_python_example():
    blocks = python_blocks()
    assert len(blocks) == 1, f"expected one Python example in README.md, found {len(blocks)}"
    assert "import shmring" in blocks[0]


def test_readme_python_example_runs():
    (code,) = python_blocks()
    ring = Path("/dev/shm/camera0")
    assert not ring.exists(), f"{ring} exists already (a live ring?); the example would reuse it"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"README example failed:\n{r.stderr}"
    assert not ring.exists(), "the example should remove its ring"
