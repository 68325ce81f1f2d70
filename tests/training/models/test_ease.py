"""EASE's dense inverse runs with one BLAS thread whatever the caller's environment, and its
weights are row-major, before and after a save.

scipy's bundled OpenBLAS crashed (SIGSEGV, no message) inverting the 20,819-item Complete
Journey Gram matrix with two threads; ``shoprec train`` run directly, without the Makefile's
``OPENBLAS_NUM_THREADS``, died at "fitting ease". The check runs in a fresh process without
the variable and asks threadpoolctl, from inside the inverse, how many threads it has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import scipy.sparse as sp

SCRIPT = textwrap.dedent("""
    import json
    import scipy.linalg
    from threadpoolctl import threadpool_info
    from features.sample import SampleConfig, generate_shop
    from features.dataset import build_dataset
    from features.loading import validate_tables
    from features.sources import RawTable
    from training.models.ease import EASEModel

    seen = []
    real_inv = scipy.linalg.inv

    def spy(*args, **kwargs):
        seen.append([lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"])
        return real_inv(*args, **kwargs)

    scipy.linalg.inv = spy
    outside = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    shop = generate_shop(SampleConfig(customers=200, items=60, days=60, seed=1, dirty_share=0.0))
    data = build_dataset(validate_tables({k: RawTable(v, k) for k, v in shop.tables.items()}, source="s"))
    EASEModel().fit(data)
    print(json.dumps({"outside": outside, "inside": seen}))
""")


def test_the_inverse_uses_one_blas_thread_without_openblas_num_threads() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    threads = json.loads(result.stdout.strip().splitlines()[-1])
    assert threads["inside"] and all(n == 1 for n in threads["inside"][0]), threads
    if os.cpu_count() and os.cpu_count() > 1:  # the limit is EASE's own, not the machine's default
        assert max(threads["outside"]) > 1, threads


def test_weights_are_row_major_so_scoring_never_copies_them(tmp_path: Path) -> None:
    """The inverse comes column-major; scipy's sparse x dense product copied it on every call
    (1.7 GB per block on Complete Journey's 20,819 items: 78 customers/s in ``shoprec picks``).
    A model saved column-major before the fix is made row-major on load."""
    from training.models.ease import EASEModel

    rng = np.random.default_rng(0)
    history = sp.random(300, 80, density=0.1, format="csr", dtype=np.float32, random_state=rng)

    class Data:
        interactions = history
        shape = history.shape

    model = EASEModel().fit(Data())  # type: ignore[arg-type]
    assert model.weights_.flags["C_CONTIGUOUS"]
    old = EASEModel()
    old.weights_ = np.asfortranarray(model.weights_)
    old.save(tmp_path / "old")
    loaded = EASEModel().load_state(tmp_path / "old")
    assert loaded.weights_.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(loaded.score(np.arange(5), history[:5]), model.score(np.arange(5), history[:5]))
