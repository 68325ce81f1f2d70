"""The bundle as an MLflow pyfunc model: ``mlflow.pyfunc.load_model("models:/shoprec@champion")``.

The service, the email batch job, a notebook and ``mlflow.pyfunc.spark_udf`` all load the
bundle through this one class, so they all answer from the same files with the same rules.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from mlflow.pyfunc import PythonModel, PythonModelContext

from training.bundle import Bundle

BUNDLE_ARTIFACT = "bundle"
DEFAULT_K = 10


class ShoprecModel(PythonModel):
    """Input: a frame with ``customer_id``; output: ``customer_id, canonical_id, rank, item_id,
    score, reason``."""

    def load_context(self, context: PythonModelContext) -> None:
        self.bundle = Bundle.load(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", DEFAULT_K))
        if "customer_id" not in model_input.columns:
            raise ValueError("input needs a 'customer_id' column")
        return self.bundle.recommend(model_input["customer_id"].astype(str).tolist(), k)


def log_bundle(bundle: Bundle, bundle_dir: Path, pip_requirements: list[str]) -> str:
    """Log the saved bundle folder as a pyfunc model in the active run; returns its model URI."""
    example = pd.DataFrame({"customer_id": bundle.customers.external_ids[:2].astype(str)})
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values; `rank` never is missing.
        warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
        signature = infer_signature(example, bundle.recommend(example["customer_id"].tolist(), DEFAULT_K),
                                    params={"k": DEFAULT_K})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # models from code: no pickle
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements,
        )
    return info.model_uri
