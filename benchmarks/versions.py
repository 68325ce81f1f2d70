"""Running an earlier version beside this one, for the side-by-side benchmarks
(bench_versions.py, bench_requests.py): the earlier commit checked out with ``git worktree``,
and a probe script run in a fresh interpreter against either checkout through ``PYTHONPATH``,
with this repository's virtual environment, printing one ``RESULT {json}`` line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def earlier_version(ref: str) -> Iterator[tuple[Path, Path]]:
    """``(checkout of ref, a scratch folder)``; both removed on exit."""
    with tempfile.TemporaryDirectory(prefix="shoprec-bench-") as tmp:
        checkout = Path(tmp) / "ref"
        subprocess.run(["git", "worktree", "add", "--detach", str(checkout), ref], cwd=REPO, check=True,
                       capture_output=True)
        try:
            yield checkout, Path(tmp)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(checkout)], cwd=REPO, capture_output=True)


def probe(checkout: Path, script: str, args: list[str], timeout: float) -> dict[str, float]:
    """Run ``script`` (Python source) with ``args`` in a fresh interpreter importing ``checkout``;
    its ``RESULT`` line as a dict (exits naming the checkout, with its stderr, when there is none)."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "OPENBLAS_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", script, *args], cwd=checkout, env=env,
                         capture_output=True, text=True, timeout=timeout)
    line = next((x for x in run.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{checkout} failed:\n{run.stderr[-3000:]}")
    return dict(json.loads(line[len("RESULT "):]))
