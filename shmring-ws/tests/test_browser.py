"""Issue 5, test 3: headless Chromium decodes the viewer page's video (driven over CDP by
puppeteer-core; see browser/viewer.test.mjs)."""
import subprocess
from pathlib import Path

BROWSER_DIR = Path(__file__).resolve().parent / "browser"


def test_chromium_decodes_the_viewer_stream(stack):
    stack.start_producer()
    stack.start_server()
    r = subprocess.run(["node", str(BROWSER_DIR / "viewer.test.mjs"), f"http://127.0.0.1:{stack.port}/"],
                       capture_output=True, text=True, timeout=150)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "PASS:" in r.stdout
