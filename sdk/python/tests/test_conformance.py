"""Runs examples/conformance.py against a real server (scripts/test-server.sh).

Needs AIPROD_ENV_FILE (the env file test-server.sh writes) or AIPROD_ENDPOINT & co in the
environment; skipped otherwise, unless AIPROD_REQUIRE_CONFORMANCE=1 (set by test.sh) makes it fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "conformance.py"


def test_conformance_scenario() -> None:
    if not (os.environ.get("AIPROD_ENV_FILE") or os.environ.get("AIPROD_ENDPOINT")):
        if os.environ.get("AIPROD_REQUIRE_CONFORMANCE") == "1":
            pytest.fail("AIPROD_ENV_FILE is not set: no server to run the conformance scenario against")
        pytest.skip("no server: set AIPROD_ENV_FILE to the env file of scripts/test-server.sh")
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=300, check=False)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    assert proc.returncode == 0, f"conformance failed:\n{proc.stdout}\n{proc.stderr}"
    assert "conformance (python): 11 steps passed" in proc.stdout
