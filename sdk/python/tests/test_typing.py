"""mypy --strict checks request fields (a misspelled field or a wrong type is a type error), and
every Python snippet of the README type-checks; its quickstart is the one examples/conformance.py runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

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

# Each line marked "# E" must be reported by mypy, and no other.
BAD = """
import aiprod

def run(client: aiprod.Client) -> None:
    client.render.create_job(preset_id="quick_social", breif="typo")  # E
    client.render.create_job(preset_id="quick_social", duration_s="60")  # E
    client.render.get_job(job_id=42)  # E
    client.render.list_jobs(states=["DELIVERED"])  # E
    client.render.create_job(preset_id="quick_social", labels={"k": 1})  # E
    client.render.get_job(job_id="j", timeout="5")  # E
"""


def readme_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (HERE / "README.md").read_text(), re.S)


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """One mypy --strict run over GOOD, BAD and every README snippet (mypy is slow to start)."""
    tmp = tmp_path_factory.mktemp("typing")
    (tmp / "good.py").write_text(GOOD)
    (tmp / "bad.py").write_text(BAD)
    files = [tmp / "good.py", tmp / "bad.py"]
    for i, snippet in enumerate(readme_snippets()):
        files.append(tmp / f"readme_{i}.py")
        files[-1].write_text(snippet)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(HERE / "pyproject.toml"), *map(str, files)],
        cwd=HERE,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    yield proc.returncode, proc.stdout + proc.stderr


def test_mypy_rejects_misspelled_fields_and_wrong_types(mypy_output: tuple[int, str]) -> None:
    code, out = mypy_output
    assert code == 1, out
    flagged = {int(n) for n in re.findall(r"bad\.py:(\d+): error", out)}
    expected = {i + 1 for i, line in enumerate(BAD.splitlines()) if line.endswith("# E")}
    assert flagged == expected, out
    assert 'Unexpected keyword argument "breif"' in out, out
    assert "good.py" not in out, out


def test_readme_snippets_type_check(mypy_output: tuple[int, str]) -> None:
    _, out = mypy_output
    assert len(readme_snippets()) >= 10
    assert "readme_" not in out, out


def test_readme_quickstart_is_the_tested_one() -> None:
    example = (HERE / "examples" / "conformance.py").read_text()
    m = re.search(r"\[START quickstart\][^\n]*\n(.*?)\n[^\n]*\[END quickstart\]", example, re.S)
    assert m is not None
    quickstart = textwrap.dedent(m.group(1)).strip("\n")
    assert f"```python\n{quickstart}\n```" in (HERE / "README.md").read_text()
