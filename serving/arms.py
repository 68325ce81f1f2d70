"""The arms of a running experiment in one worker: each variant's recommender, and who gets which.

A worker holds one :class:`Arms` next to its champion and swaps it as one reference, like the
champion, so a request sees the whole old set or the whole new one. Outside an experiment it is
empty and every request goes to the champion (training/experiments.py has the assignment)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from serving.recommender import ShopRecommender
from training.experiments import Experiment, Variant


@dataclass(frozen=True)
class Arms:
    experiment: Experiment | None = None
    recommenders: Mapping[str, ShopRecommender] = field(default_factory=dict)
    """Variant name -> the recommender of its version."""

    @classmethod
    def of(cls, experiment: Experiment, serving: list[ShopRecommender],
           load: Callable[[str], ShopRecommender]) -> Arms:
        """The arms of ``experiment``. A variant whose version one of ``serving`` (the champion, the
        current arms) already answers with shares that recommender; ``load`` makes the others from
        a version number (fetched and warmed before the caller swaps them in)."""
        by_label = {rec.model_version: rec for rec in serving}
        recommenders = {}
        for variant in experiment.variants:
            label = f"{experiment.model}/v{variant.version}"
            if label not in by_label:
                by_label[label] = load(variant.version)
            recommenders[variant.name] = by_label[label]
        return cls(experiment, recommenders)

    def route(self, customer_id: str | None, session_id: str | None) -> tuple[ShopRecommender, Variant] | None:
        """The variant a request's unit is in and its recommender; None outside an experiment."""
        if self.experiment is None or (unit := self.experiment.unit_of(customer_id, session_id)) is None:
            return None
        variant = self.experiment.assign(unit)
        return self.recommenders[variant.name], variant

    def batches(self, champion: ShopRecommender, customer_ids: list[str]
                ) -> list[tuple[ShopRecommender, Variant | None, list[int]]]:
        """A batch's customers (their positions) by the recommender that answers them: each
        variant's, assigned by the canonical id, or the champion's for all outside an experiment."""
        if self.experiment is None:
            return [(champion, None, list(range(len(customer_ids))))]
        groups: dict[str, list[int]] = {}
        variants: dict[str, Variant] = {}
        for position, canonical in enumerate(champion.bundle.canonical_ids(customer_ids)):
            variant = self.experiment.assign(str(canonical))
            variants[variant.name] = variant
            groups.setdefault(variant.name, []).append(position)
        return [(self.recommenders[name], variants[name], positions) for name, positions in groups.items()]
