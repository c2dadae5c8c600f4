"""The pure helpers of ``alem/static/alem/charts.js`` (scales, paths, parsing), tested with
Node's own test runner when ``node`` is installed. The drawing itself is checked in a browser by
the end-to-end tests."""

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).parent / "js" / "charts.test.js"
NODE = shutil.which("node") or shutil.which("nodejs")


@pytest.mark.skipif(NODE is None, reason="needs Node.js (node) to run tests/js/charts.test.js")
def test_chart_helpers_pass_their_node_tests():
    result = subprocess.run(
        [NODE, "--test", str(JS_TESTS)], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
