"""mypy --strict checks request fields: a misspelled field or a wrong type is a type error."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent

GOOD = """
import aiprod
from aiprod.v1 import JOB_STATE_DELIVERED, AspectRatio

def run(client: aiprod.Client) -> str:
    job = client.render.create_job(
        preset_id="quick_social", brief="ten chars+", duration_s=15,
        aspect_ratio=AspectRatio.ASPECT_RATIO_9_16, labels={"campaign": "spring"}, auto_approve=True,
    ).job
    jobs = client.render.list_jobs(states=[JOB_STATE_DELIVERED], page_size=10).jobs
    return job.job_id + str(len(jobs))
"""

# Each line marked "# E" must be reported by mypy.
BAD = """
import aiprod

def run(client: aiprod.Client) -> None:
    client.render.create_job(preset_id="quick_social", breif="typo")  # E
    client.render.create_job(preset_id="quick_social", duration_s="60")  # E
    client.render.get_job(job_id=42)  # E
    client.render.list_jobs(states=["DELIVERED"])  # E
    client.render.create_job(preset_id="quick_social", labels={"k": 1})  # E
"""


def test_mypy_rejects_misspelled_fields_and_wrong_types(tmp_path: Path) -> None:
    (tmp_path / "good.py").write_text(GOOD)
    (tmp_path / "bad.py").write_text(BAD)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(HERE / "pyproject.toml"),
         str(tmp_path / "good.py"), str(tmp_path / "bad.py")],
        cwd=HERE, capture_output=True, text=True, timeout=240, check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    flagged = {int(n) for n in re.findall(r"bad\.py:(\d+): error", out)}
    expected = {i + 1 for i, line in enumerate(BAD.splitlines()) if line.endswith("# E")}
    assert flagged == expected, out
    assert "good.py" not in out, out
    assert 'Unexpected keyword argument "breif"' in out, out
