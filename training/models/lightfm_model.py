"""LightFM hybrid (Kula 2015): items are the sum of their features' embeddings.

Besides a per-item identity feature, each item carries its category, brand and price tier,
so an item nobody has bought yet still lands near the items it resembles and can be
recommended from day one, which pure collaborative models (ALS, BPR, EASE) cannot do.

Items without a single interaction are left out of training: WARP would otherwise sample
them as certain negatives and teach their category that nobody wants it, when in truth
nothing is known about them yet. Their representation is the mean of their features'
embeddings; the untrained ones (their own identity, a brand nobody bought yet) keep their
small random start and so pull the score towards "unknown" rather than either way.

Only the learned representations are kept: the item side is collapsed at fit time to
``item_features @ embeddings``, so scoring is one matrix product and the saved state is
plain arrays (no pickled LightFM object), and ``lightfm`` is imported only to fit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field, field_validator
from threadpoolctl import threadpool_limits

from features.dataset import Dataset
from features.errors import UserError
from training.models.base import FitCost, InnerProduct, MatrixSize, ModelConfig, Recommender, factor_memory

if TYPE_CHECKING:
    from lightfm import LightFM

ItemFeature = Literal["identity", "category", "brand", "price_tier"]
ENTRY_S = 4.6e-8
"""LightFM (WARP, four item features) seconds per entry, epoch and component; measured on sample
shops of 47k and 208k entries: 2.2 microseconds an entry an epoch at 48 components."""


class LightFMConfig(ModelConfig):
    """Hyper-parameters; ``item_features`` picks the catalogue columns that become features.

    WARP is the default loss because it optimises the top of the ranking, which is what
    recommendations show. ``logistic`` sees only positives here (there are no explicit
    negatives), so it learns little beyond popularity. ``identity`` lets each item depart
    from its metadata once it has interactions; dropping it gives a pure content model.
    """

    no_components: int = Field(48, ge=2, le=512)
    loss: Literal["warp", "bpr", "logistic"] = "warp"
    learning_rate: float = Field(0.05, gt=0)
    item_alpha: float = Field(1e-6, ge=0, description="L2 penalty on item feature embeddings.")
    user_alpha: float = Field(1e-6, ge=0, description="L2 penalty on customer embeddings.")
    epochs: int = Field(30, ge=1, le=1000)
    max_sampled: int = Field(10, ge=1, description="WARP: negatives tried per positive before giving up.")
    item_features: tuple[ItemFeature, ...] = Field(("identity", "category", "brand", "price_tier"), min_length=1)
    identity_weight: float = Field(1.0, gt=0, description="Identity vs each metadata feature, before row "
                                   "normalisation: higher trusts an item's own history over its metadata.")
    price_tiers: int = Field(3, ge=1, le=20, description="Price quantile buckets within each category.")
    random_state: int = 42

    @field_validator("item_features")
    @classmethod
    def _unique(cls, features: tuple[ItemFeature, ...]) -> tuple[ItemFeature, ...]:
        if len(set(features)) != len(features):
            raise UserError(f"item_features has duplicates: {features}")
        return features


def one_hot(values: pd.Series | np.ndarray) -> sp.csr_matrix:
    """One column per distinct non-missing value; rows with a missing value stay empty."""
    codes, uniques = pd.factorize(np.asarray(values, dtype=object))
    rows = np.flatnonzero(codes >= 0)
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, codes[rows])),
                         shape=(len(codes), len(uniques)))


def price_tier(catalogue: pd.DataFrame, tiers: int) -> np.ndarray:
    """0 (cheapest) .. tiers-1 by price quantile within the item's own category.

    Within-category, because a cheap television costs more than a dear toothbrush: the
    tier says how a customer shops (budget or premium), which carries across categories.
    """
    by_category = catalogue.groupby("category", sort=False)["price"]
    rank = by_category.rank(method="min").to_numpy(dtype=np.int64) - 1  # equal prices share a tier
    size = by_category.transform("size").to_numpy(dtype=np.int64)
    return rank * tiers // size


def feature_block(catalogue: pd.DataFrame, name: ItemFeature, config: LightFMConfig) -> sp.csr_matrix:
    """The columns of one feature kind; items without a brand get no brand column."""
    match name:
        case "identity":
            return config.identity_weight * sp.identity(len(catalogue), dtype=np.float32, format="csr")
        case "category":
            return one_hot(catalogue["category"])
        case "brand":
            return one_hot(catalogue["brand"])
        case "price_tier":
            return one_hot(price_tier(catalogue, config.price_tiers))


def item_feature_matrix(catalogue: pd.DataFrame, config: LightFMConfig) -> sp.csr_matrix:
    """Items x features (the config's kinds side by side), each row summing to 1.

    Rows are normalised as LightFM recommends: otherwise items with more features (a brand)
    would get larger representations and outrank the rest for that reason alone.
    """
    blocks = [feature_block(catalogue, name, config) for name in config.item_features]
    matrix = sp.hstack(blocks, format="csr", dtype=np.float32)
    row_sums = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1.0, row_sums, out=np.zeros_like(row_sums), where=row_sums > 0)
    return sp.csr_matrix(sp.diags(scale) @ matrix, dtype=np.float32)


def weighted_positives(interactions: sp.csr_matrix) -> tuple[sp.coo_matrix, sp.coo_matrix]:
    """Binary positives and the dataset's confidence weights, in the same entry order.

    LightFM treats any positive value as a positive and takes strength only from
    ``sample_weight``, which must be a COO matrix with identical row/col arrays.
    """
    weights = interactions.tocoo()
    keep = weights.data > 0
    rows, cols, data = weights.row[keep], weights.col[keep], weights.data[keep].astype(np.float32)
    positives = sp.coo_matrix((np.ones_like(data), (rows, cols)), shape=interactions.shape)
    return positives, sp.coo_matrix((data, (rows, cols)), shape=interactions.shape)


class LightFMModel(Recommender[LightFMConfig]):
    """Customer embedding dot item representation, plus biases: LightFM's prediction."""

    family = "lightfm"
    config_class = LightFMConfig

    def fit_cost(self, size: MatrixSize) -> FitCost:
        c = self.config
        return FitCost(c.epochs * c.no_components * size.entries * ENTRY_S, factor_memory(size, c.no_components))

    def fit(self, dataset: Dataset) -> Self:
        from lightfm import LightFM

        c = self.config
        has_history = np.asarray((dataset.interactions > 0).sum(axis=0)).ravel() > 0
        if not has_history.any():
            raise UserError("the dataset has no interactions to learn from")
        features = item_feature_matrix(dataset.catalogue, c)
        if features.shape[1] == 0:
            raise UserError(f"item_features {list(c.item_features)} give no feature columns for this catalogue")
        positives, weights = weighted_positives(dataset.interactions[:, has_history])
        model = LightFM(no_components=c.no_components, loss=c.loss, learning_rate=c.learning_rate,
                        item_alpha=c.item_alpha, user_alpha=c.user_alpha, max_sampled=c.max_sampled,
                        random_state=c.random_state)
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(positives, item_features=features[has_history], sample_weight=weights,
                      epochs=c.epochs, num_threads=1)
        self._store(model, features)
        return self

    def _store(self, model: LightFM, features: sp.csr_matrix) -> None:
        """Collapse item features into one representation per item so scoring needs no features."""
        item_biases, item_factors = model.get_item_representations(features)
        self.item_factors_ = np.ascontiguousarray(item_factors, dtype=np.float32)
        self.item_biases_ = np.asarray(item_biases, dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(model.user_embeddings, dtype=np.float32)
        self.user_biases_ = np.asarray(model.user_biases, dtype=np.float32)

    def score(self, customers: np.ndarray, history: sp.csr_matrix) -> np.ndarray:
        scores = self.user_factors_[customers] @ self.item_factors_.T
        scores += self.item_biases_
        scores += self.user_biases_[customers, None]
        return scores

    def inner_product(self) -> InnerProduct:
        return InnerProduct(self.user_factors_, self.item_factors_, self.user_biases_, self.item_biases_)
