"""Best columns per row of a dense score block, fast: the machinery under the one ranking path.

:func:`capped_top_k` is the top k per row under a per-group cap (the diversity cap), walked
over a few multiples of k of the best candidates; :func:`best_columns` finds those candidates
by sorting narrow blocks, partitioning wide ones in place, and, on a large catalogue, keeping
what lies above a floor taken from a sample of each row. Ties break by column index, so a
row's answer never depends on the block it was scored in.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

CANDIDATE_DEPTH = 10
"""Candidates per row, in multiples of k, that the capped top-k walks through before giving up."""
SHALLOW_DEPTH = 3
"""Candidates per row, in multiples of k, of the capped top-k's first pass: enough for nearly
every row; the rows it leaves short go on to :data:`CANDIDATE_DEPTH`."""
SCORE_BLOCK_BYTES = 256 * 2**20
"""Memory a block of dense scores may take when many customers are scored at once (evaluation,
email picks, the pyfunc): rows x items cells of about :data:`BYTES_PER_CELL` each."""
BYTES_PER_CELL = 16
"""A dense score cell (float32) plus the top-k's working copy of it (float32) and its index (int64)."""


def block_rows(n_items: int, most: int) -> int:
    """Customers per dense scoring block: ``most`` on a small catalogue, fewer on a large one, so
    that a block stays within :data:`SCORE_BLOCK_BYTES` (at 40,000 items: 419 rows, not 4,096 x
    40,000 x 16 bytes = 2.6 GB). Lists never depend on the block they were made in."""
    return max(1, min(most, SCORE_BLOCK_BYTES // (BYTES_PER_CELL * max(n_items, 1))))


def rows_of(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored entries of csr ``matrix`` in ``rows``, as (position in ``rows``, column, value),
    row by row in stored order: scipy's row indexing without building a matrix (the hot path
    reads one customer at a time)."""
    starts, ends = matrix.indptr[rows], matrix.indptr[np.asarray(rows) + 1]
    counts = (ends - starts).astype(np.int64)
    total = int(counts.sum())
    offsets = np.repeat(starts - np.concatenate(([0], np.cumsum(counts)[:-1])), counts) + np.arange(total)
    return np.repeat(np.arange(len(counts)), counts), matrix.indices[offsets], matrix.data[offsets]


def capped_top_k(scores: np.ndarray, k: int, group: np.ndarray | None = None, cap: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The one top-k: best k finite columns per row, at most ``cap`` per ``group``, best first,
    equal scores by column.

    ``group`` is per column (1-d) or per cell (rows x columns, for candidate matrices whose
    columns are not items). The cap keeps each candidate whose group already appeared fewer
    than ``cap`` times before it in its row, so a row's answer is decided by a prefix of its
    best columns: :func:`best_columns` gives each row its best ``SHALLOW_DEPTH * k``, and only
    the rows that this leaves short while more columns remain walk ``CANDIDATE_DEPTH * k``
    deep, and the few still short then (a cap that keeps nearly every candidate out: all of a
    row's best items of a handful of kinds) their whole row. Rows with fewer than k finite
    columns the cap keeps are padded with -1 / 0.
    """
    n, m = scores.shape
    k = max(int(k), 0)
    if n == 0 or k == 0 or m == 0:
        return np.full((n, k), -1, dtype=np.int64), np.zeros((n, k), dtype=np.float64)
    if n == 1 and m <= ONE_ROW_WALK:
        return _walk_one_row(scores[0], k, None if group is None else group.reshape(-1), cap)
    if cap is None or group is None or cap >= k:
        return _first_kept(scores, None, None, k, k)[:2]
    items, top, short = _first_kept(scores, group, cap, k, SHALLOW_DEPTH * k)
    deeper = np.flatnonzero(short)
    if len(deeper):
        cells = group[deeper] if group.ndim == 2 else group
        items[deeper], top[deeper], still_short = _first_kept(scores[deeper], cells, cap, k, CANDIDATE_DEPTH * k)
        whole = [row for row in deeper[still_short] if _reachable(scores[row], group, row, cap) > (items[row] >= 0).sum()]
        if whole:
            cells = group[whole] if group.ndim == 2 else group
            items[whole], top[whole], _ = _first_kept(scores[whole], cells, cap, k, m)
    return items, top


ONE_ROW_WALK = 4096
"""Up to this many columns, a single row (a request's candidates) is sorted once and walked in
Python: a handful of numpy calls instead of the block machinery's few dozen, the same answer."""


def _walk_one_row(row: np.ndarray, k: int, group: np.ndarray | None, cap: int | None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`capped_top_k` of one row: its finite columns best first (equal scores by column),
    each kept while its group has fewer than ``cap`` kept before it, up to k."""
    finite = np.flatnonzero(row > -np.inf)
    order = finite[np.argsort(-row[finite], kind="stable")]
    if cap is None or group is None or cap >= k:
        kept = order[:k]
    else:
        taken: dict[int, int] = {}
        picks: list[int] = []
        for column, kind in zip(order.tolist(), group[order].tolist(), strict=True):
            if taken.get(kind, 0) < cap:
                taken[kind] = taken.get(kind, 0) + 1
                picks.append(column)
                if len(picks) == k:
                    break
        kept = np.asarray(picks, dtype=np.int64)
    items = np.full((1, k), -1, dtype=np.int64)
    top = np.zeros((1, k), dtype=np.float64)
    items[0, :len(kept)], top[0, :len(kept)] = kept, row[kept]
    return items, top


def _reachable(row_scores: np.ndarray, group: np.ndarray, row: int, cap: int) -> int:
    """How many of a row's finite columns the cap could keep at best (each group's count, up to
    the cap): when no more than it already kept, walking the whole row cannot add one (an offers
    request in one category with the cap per category), so that sort is skipped."""
    groups = (group[row] if group.ndim == 2 else group)[np.isfinite(row_scores)]
    counts = np.bincount(groups[groups >= 0])  # one pass, no sort
    return int(np.minimum(counts, cap).sum()) + min(int((groups < 0).sum()), cap)


def _first_kept(scores: np.ndarray, group: np.ndarray | None, cap: int | None, k: int, depth: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first k of each row's best ``depth`` columns that the cap keeps (rows x k, -1 / 0
    after the last), and per row whether it came up short with all ``depth`` columns finite
    (deeper columns could still fill it)."""
    n, m = scores.shape
    items, top = best_columns(scores, depth)
    window_full = items[:, -1] >= 0 if depth < m and items.shape[1] == depth else np.zeros(n, dtype=bool)
    keep = items >= 0
    if cap is not None and group is not None:
        safe = np.maximum(items, 0)
        cells = np.take_along_axis(group, safe, axis=1) if group.ndim == 2 else group[safe]
        keep &= _rank_in_group(np.where(keep, cells, -1)) < cap
    position = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # the first k kept, in order
    items = np.take_along_axis(items, position, axis=1)
    top = np.take_along_axis(top, position, axis=1).astype(np.float64)
    valid = np.take_along_axis(keep, position, axis=1)
    items[~valid], top[~valid] = -1, 0.0
    if items.shape[1] < k:
        items = np.pad(items, ((0, 0), (0, k - items.shape[1])), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])))
    short = window_full & (valid.sum(axis=1) < k)
    return items, top, short


NARROW = 3
"""Below this many columns per wanted column, :func:`best_columns` sorts whole rows (measured on
the candidate matrices of :func:`make_lists`)."""


def best_columns(scores: np.ndarray, depth: int, excluded: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's best ``depth`` finite columns and their scores, best first, equal scores by
    column (-1 / -inf after a row's last), so that a row's answer depends on its scores alone,
    never on the block it came in or the width of the matrix. ``excluded`` (rows, columns):
    cells left out as if they were -inf, without a masked copy of ``scores``. Scores are
    floats without NaN (every model's are; a NaN would rank differently on the two paths).

    A matrix of few columns (a candidate matrix) is sorted row by row, stably; a wide one (the
    catalogue) is partitioned (:func:`_best_by_partition`), or from :data:`SAMPLED_FROM`
    columns on cut at a floor from a sample of each row (:func:`_best_above_sampled_floor`).
    """
    n, m = scores.shape
    if depth <= 0:
        return np.full((n, 0), -1, dtype=np.int64), np.full((n, 0), -np.inf, dtype=scores.dtype)
    if m < NARROW * depth:
        negated = -scores
        if excluded is not None:
            negated[excluded] = np.inf
        items = np.argsort(negated, axis=1, kind="stable")[:, :depth]
        return _finite_prefix(items, -np.take_along_axis(negated, items, axis=1))
    if m >= SAMPLED_FROM:
        return _best_above_sampled_floor(scores, depth, excluded)
    return _best_by_partition(scores, depth, excluded)


SAMPLED_FROM = 4096
"""From this many columns, :func:`best_columns` takes :func:`_best_above_sampled_floor`: below it
(the demo's 1,000 items) a whole-row partition is faster on distinct scores (3.4 against 6.5 ms
for 400 x 1,000 at depth 30), above it the sampled floor is faster on every kind of row (at
40,000 columns: 2.5x on distinct scores, 43-47x on mostly zeros or mostly -inf;
``benchmarks/bench_top_k.py``)."""
SAMPLE_STRIDE = 8
"""Columns apart in the sample: the sort costs an eighth of a row, and about 8 x depth columns
of a row then lie above the floor."""
SAMPLE_DEPTHS = 4
""":func:`_best_above_sampled_floor` samples every :data:`SAMPLE_STRIDE`-th column (fewer apart
where that would leave a row less than ``SAMPLE_DEPTHS * depth`` of them): about ``stride *
depth`` columns of a row then lie above the floor."""


def _best_above_sampled_floor(scores: np.ndarray, depth: int, excluded: tuple[np.ndarray, np.ndarray] | None
                              ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_columns` of a matrix of many columns (a large catalogue), without a
    partition of whole rows.

    A sort of a sample of each row's columns (every ``stride``-th) gives a floor: the
    sample's ``depth``-th best score, which the row's own ``depth``-th best is at least. The
    columns strictly above the floor are then the row's best when there are ``depth`` of them,
    and otherwise the row's ``depth``-th best is the floor itself, so its best are those above it
    and, of the columns equal to it, the lowest (a row of zeros ties across the whole catalogue,
    so ties must be cut, and cut the same way always). Sorting a sample rather than partitioning
    rows also keeps off numpy's partition on long runs of equal scores (zeros, excluded cells),
    where it is ten times slower than on distinct ones (80 against 7 ns a cell at 40,000
    columns). The few columns kept are packed a row each, in column order, and sorted stably.
    """
    n, m = scores.shape
    stride = max(1, min(SAMPLE_STRIDE, m // (SAMPLE_DEPTHS * depth)))
    sample = np.array(scores[:, ::stride], copy=True)
    if excluded is not None:
        on_sample = excluded[1] % stride == 0
        sample[excluded[0][on_sample], excluded[1][on_sample] // stride] = -np.inf
    sample.sort(axis=1)  # numpy's sort, unlike its partition, is as fast on ties as on distinct values
    floor = sample[:, sample.shape[1] - depth]  # the sample is wider than depth: m >= NARROW * depth
    above = scores > floor[:, None]
    if excluded is not None:
        above[excluded] = False
    rows, cols = np.divmod(np.flatnonzero(above), m)  # each row's columns ascending
    counts = np.bincount(rows, minlength=n)
    short = np.flatnonzero((counts < depth) & (floor > -np.inf))
    if len(short):  # the floor is these rows' depth-th best: add its lowest columns
        tie = scores[short] == floor[short, None]
        if excluded is not None:
            position = np.full(n, -1, dtype=np.int64)
            position[short] = np.arange(len(short))
            hit = position[excluded[0]] >= 0
            tie[position[excluded[0][hit]], excluded[1][hit]] = False
        tie_rows, tie_cols = np.divmod(np.flatnonzero(tie), m)
        tie_rows = short[tie_rows]
        keep = _place_in_row(np.bincount(tie_rows, minlength=n)) < (depth - counts)[tie_rows]
        rows, cols = np.concatenate([rows, tie_rows[keep]]), np.concatenate([cols, tie_cols[keep]])
        order = np.lexsort((cols, rows))
        rows, cols = rows[order], cols[order]
        counts = np.bincount(rows, minlength=n)
    items, top = _sorted_rows(n, rows, cols, scores[rows, cols], counts, scores.dtype)
    return _finite_prefix(items[:, :depth], top[:, :depth])


def _best_by_partition(scores: np.ndarray, depth: int, excluded: tuple[np.ndarray, np.ndarray] | None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_columns` of a wide matrix: one in-place ``partition`` of a copy finds
    each row's ``depth``-th best score and one comparison pass the columns at least as good: all
    the better ones, and of those equal to it the lowest, up to ``depth`` in all (a row of
    zeros ties across the whole catalogue, so ties must be cut, and cut the same way always); the
    few kept are then packed a row each, still in column order, and sorted stably."""
    n, m = scores.shape
    work = np.array(scores, copy=True)
    if excluded is not None:
        work[excluded] = -np.inf
    work.partition(m - depth, axis=1)
    kth = work[:, m - depth]
    # a row with fewer finite scores than depth has a -inf edge: compare with the lowest finite
    # value instead, so that its -inf cells never reach the packing below
    at_least = scores >= np.where(kth > -np.inf, kth, np.finfo(scores.dtype).min)[:, None]
    if excluded is not None:
        at_least[excluded] = False
    rows, cols = np.divmod(np.flatnonzero(at_least), m)  # each row's columns ascending
    values = scores[rows, cols]
    keep = values > -np.inf
    tie = values == kth[rows]
    if tie.any():  # of the columns equal to the row's edge, the lowest that still fit
        room = depth - np.bincount(rows[~tie], minlength=n)
        tie_rows = rows[tie]
        keep[tie] &= _place_in_row(np.bincount(tie_rows, minlength=n)) < room[tie_rows]
    rows, cols, values = rows[keep], cols[keep], values[keep]
    return _finite_prefix(*_sorted_rows(n, rows, cols, values, np.bincount(rows, minlength=n), scores.dtype))


def _sorted_rows(n: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, counts: np.ndarray,
                 dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(row, column, value) cells, grouped by row with columns ascending, packed a row each and
    sorted stably best first (equal values keep their column order); -1 / -inf after the last."""
    items, top = pack_rows(n, rows, cols, values, counts, -np.inf, dtype)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(items, order, axis=1), np.take_along_axis(top, order, axis=1)


def _place_in_row(counts: np.ndarray) -> np.ndarray:
    """For entries grouped by row (``counts`` per row, in row order), each one's place in its row."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def pack_rows(n: int, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, counts: np.ndarray,
              fill: float, dtype: np.dtype | type) -> tuple[np.ndarray, np.ndarray]:
    """Entries grouped by row (``counts`` per row) as rows x widest-row matrices, left-packed in
    their order: columns (-1 after a row's last) and values (``fill`` after it)."""
    position = _place_in_row(counts)
    width = int(counts.max(initial=0))
    items = np.full((n, width), -1, dtype=np.int64)
    packed = np.full((n, width), fill, dtype=dtype)
    items[rows, position], packed[rows, position] = cols, values
    return items, packed


def _finite_prefix(items: np.ndarray, top: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows sorted best first, cut to the widest row's finite cells; -1 / -inf after each row's."""
    finite = top > -np.inf
    width = int(finite.sum(axis=1).max(initial=0))
    return np.where(finite, items, -1)[:, :width], np.where(finite, top, -np.inf)[:, :width]


def _rank_in_group(groups: np.ndarray) -> np.ndarray:
    """For each cell, how many cells to its left in its row hold the same group."""
    n, d = groups.shape
    order = np.argsort(groups, axis=1, kind="stable")  # same groups contiguous, left-to-right kept
    sorted_groups = np.take_along_axis(groups, order, axis=1)
    starts = np.ones((n, d), dtype=bool)
    starts[:, 1:] = sorted_groups[:, 1:] != sorted_groups[:, :-1]
    positions = np.broadcast_to(np.arange(d), (n, d))
    run_start = np.maximum.accumulate(np.where(starts, positions, 0), axis=1)
    ranks = np.empty((n, d), dtype=np.int64)
    np.put_along_axis(ranks, order, positions - run_start, axis=1)
    return ranks
