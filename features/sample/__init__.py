"""A synthetic shop with planted structure: the embedded default and the test fixture.

Real shop data cannot ship with the project, yet every model, rule and test needs data
whose right answers are known. This package simulates a shop from a documented process
(docs/sample.md) and returns the planted structure next to the tables, so tests can
assert that a model recovers it and that a model which ignores it does not:

* complementary item pairs (a coffee machine pulls its beans into the same order),
* sparse category interests, a personal price tier, an activity rate per customer,
* durables that are not bought twice within their repurchase interval, consumables that are,
* a per-customer session conversion rate and email open rate (some never open),
* duplicate customer ids (aliases) and a few deliberately broken rows for the loader.

Everything is vectorised numpy (no per-row Python) so 100k customers and millions of
events take seconds, and every random draw comes from a ``numpy.random.Generator``
seeded by :class:`SampleConfig` (one independent stream per stage, so turning dirty rows
on or off leaves the clean rows identical).

One module per stage, in the order they run: :mod:`~features.sample.process` (the documented
rates), ``draws`` (sampling helpers), ``catalogue``, ``customers``, ``orders``, ``browsing``,
``frames`` (the contract tables), ``truth``, ``dirty``, and :mod:`~features.sample.shop`, which
runs them all.
"""

from features.sample.process import CATEGORIES
from features.sample.shop import SampleConfig, SampleShop, generate_blocks, generate_shop, write_sample

__all__ = ["CATEGORIES", "SampleConfig", "SampleShop", "generate_blocks", "generate_shop", "write_sample"]
