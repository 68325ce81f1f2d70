"""The email-picks batch job (local engine): the same answers as POST /email_picks, an honest
summary, and clear handling of bad customer lists and model URIs."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from features.errors import UserError
from features.loading import ShopData
from batch.customers import all_customers, read_customers
from batch.job import run_job, run_picks, score_block
from batch.model_ref import load_model_uri
from batch.schema import PICKS_COLUMNS
from batch.sinks import FileSink
from serving.recommender import ShopRecommender
from tests.serving.live_server import Server
from training import tracking
from training.bundle import SIMILAR as PERSONAL
from training.bundle import Bundle, is_fallback
from training.pipeline import TrainConfig, build_bundle

GHOSTS = ["ghost-1", "ghost-2"]


@pytest.fixture(scope="module")
def rec(bundle: Bundle) -> ShopRecommender:
    return ShopRecommender(bundle, "shoprec/v3")


@pytest.fixture(scope="module")
def als_rec(shop: ShopData) -> ShopRecommender:
    return ShopRecommender(build_bundle(shop, TrainConfig(), "als", {"chosen": "als"}), "shoprec/v4")


def _endpoint_rows(rec: ShopRecommender, ids: list[str], k: int, request_size: int) -> pd.DataFrame:
    """What POST /email_picks answers, request by request, flattened to the batch's rows."""
    rows = []
    for start in range(0, len(ids), request_size):
        for pick in rec.email_picks(ids[start:start + request_size], k):
            rows += [(pick.customer_id, pick.canonical_id, rank, p.item_id, p.score, p.reason, pick.send,
                      pick.send_reason, pick.send_hour, pick.trigger, pick.trigger_detail, pick.open_propensity,
                      rec.model_version)
                     for rank, p in enumerate(pick.items, 1)]
    return pd.DataFrame(rows, columns=PICKS_COLUMNS)


def _batch_rows(rec: ShopRecommender, ids: list[str], k: int, block: int) -> pd.DataFrame:
    return pd.concat([score_block(rec, ids[s:s + block], k) for s in range(0, len(ids), block)], ignore_index=True)


@pytest.mark.parametrize("k", [1, 10, 40])
def test_batch_blocks_give_the_endpoints_answers(rec: ShopRecommender, bundle: Bundle, k: int) -> None:
    ids = [str(c) for c in bundle.customers.external_ids] + GHOSTS
    batch = _batch_rows(rec, ids, k, block=333)
    for request_size in (1, 100):
        pd.testing.assert_frame_equal(batch, _endpoint_rows(rec, ids, k, request_size), check_exact=True)
    assert set(batch["reason"].str.split(":").str[0]) >= {PERSONAL, "popular"}
    assert batch.groupby("customer_id").size().eq(k).all() and batch["customer_id"].nunique() == len(ids)


def test_batch_gives_the_endpoints_answers_with_dense_factors(als_rec: ShopRecommender) -> None:
    """ALS scores come from BLAS, whose kernels differ with the block's shape (one customer
    against hundreds) in the last float32 bit; the picks, reasons and decisions are identical."""
    ids = [str(c) for c in als_rec.bundle.customers.external_ids] + GHOSTS
    batch = _batch_rows(als_rec, ids, 10, block=4096)
    endpoint = _endpoint_rows(als_rec, ids, 10, request_size=1)
    exact = [c for c in PICKS_COLUMNS if c != "score"]
    pd.testing.assert_frame_equal(batch[exact], endpoint[exact], check_exact=True)
    np.testing.assert_allclose(batch["score"], endpoint["score"], rtol=1e-5)


def test_the_http_endpoint_and_the_batch_job_agree(server: Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's champion, once through `bentoml serve`, once through the batch job."""
    served = server.trained.bundle
    aliases = served.profiles["customer_aliases"]
    assert len(aliases) >= 5  # the sample's merged duplicates: a customer list may name them
    known = [str(c) for c in served.customers.external_ids[::5]] + aliases["alias_id"].astype(str).tolist()
    listed = ["", *known, known[0], *GHOSTS]
    pd.DataFrame({"customer_id": listed, "note": "x"}).to_csv(tmp_path / "customers.csv", index=False)
    monkeypatch.setenv("SHOPREC_HOME", str(server.home))
    result = run_job("models:/shoprec@champion", str(tmp_path / "picks.parquet"), k=6,
                     customers_file=tmp_path / "customers.csv")
    batch = pd.read_parquet(tmp_path / "picks.parquet")
    ids = [*known, *GHOSTS]
    http = []
    for start in range(0, len(ids), 100):
        body = server.post("/email_picks", {"customer_ids": ids[start:start + 100], "k": 6}).json()
        http += [(p["customer_id"], p["canonical_id"], rank, i["item_id"], i["score"], i["reason"], p["send"],
                  p["send_reason"], p["send_hour"], p["trigger"], p["trigger_detail"], p["open_propensity"],
                  body["model_version"]) for p in body["picks"]
                 for rank, i in enumerate(p["items"], 1)]
    expected = pd.DataFrame(http, columns=PICKS_COLUMNS)
    # ids, ranks, items, reasons and send exact; scores to 1e-9: BLAS may round the last bit
    # differently for a block of 4,096 customers than for a request of 100
    pd.testing.assert_frame_equal(batch, expected, check_dtype=False, check_exact=False, rtol=1e-9)
    assert result.model_version == "shoprec/v1" and set(batch["model_version"]) == {"shoprec/v1"}
    summary = result.summary
    assert summary["customers"] == len(ids) and summary["unknown_customers"] == 2
    assert summary["alias_customers"] == len(aliases)
    # an alias gets its canonical customer's own picks, named by both ids
    by_alias = batch[batch["customer_id"].isin(aliases["alias_id"])]
    assert set(zip(by_alias["customer_id"], by_alias["canonical_id"], strict=True)) == \
        set(zip(aliases["alias_id"], aliases["customer_id"], strict=True))
    canonical_picks = ShopRecommender(served, "local").email_picks(aliases["customer_id"].tolist(), 6)
    assert by_alias.groupby("canonical_id")["item_id"].apply(list).to_dict() == \
        {p.customer_id: [i.item_id for i in p.items] for p in canonical_picks}
    assert summary["input"] == {"source": str(tmp_path / "customers.csv"), "rows_in": len(listed),
                                "empty_ids_skipped": 1, "duplicate_ids_dropped": 1, "customers": len(ids)}
    assert summary["sent"] == batch.drop_duplicates("customer_id")["send"].sum()
    # the batch run in MLflow, linked both ways to the model version it used
    client = tracking.configure()
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "shoprec-picks"
    assert run.data.tags["shoprec.model_version"] == "shoprec/v1"
    assert run.data.tags["shoprec.source_run_id"] == server.trained.run_id
    assert run.data.params["engine"] == "local" and run.data.params["k"] == "6"
    assert run.data.metrics["customers"] == len(ids) and run.data.metrics["unknown_customers"] == 2
    assert run.data.metrics["customers_per_s"] > 0
    assert client.get_model_version("shoprec", "1").tags["shoprec.last_picks_run_id"] == result.run_id
    logged = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=result.run_id,
                                                                 artifact_path="picks_summary.json")).read_text())
    assert logged["categories"] == summary["categories"] and sum(logged["price_bands"].values()) == len(batch)


def test_summary_counts_what_was_written(rec: ShopRecommender, bundle: Bundle, tmp_path: Path) -> None:
    ids = np.array([str(c) for c in bundle.customers.external_ids[:700]] + GHOSTS, dtype=object)
    with FileSink(tmp_path / "all.parquet") as sink:
        whole = run_picks(rec, ids, 5, sink, block=128)
    with FileSink(tmp_path / "sent.parquet") as sink:
        sent_only = run_picks(rec, ids, 5, sink, block=256, only_send=True)
    frame, sent = pd.read_parquet(tmp_path / "all.parquet"), pd.read_parquet(tmp_path / "sent.parquet")
    per_customer = frame.groupby("customer_id").agg(send=("send", "first"),
                                                    fallback=("reason", lambda r: is_fallback(r.to_numpy()).any()))
    assert whole.customers == len(ids) and whole.customers_with_picks == len(per_customer)
    assert whole.sent == per_customer["send"].sum() == sent["customer_id"].nunique() > 0
    assert whole.fallback_customers == per_customer["fallback"].sum()
    assert whole.unknown_customers == 2
    cold = ~rec.has_history[bundle.customers.to_index(ids[:-2])]
    assert whole.cold_customers == cold.sum() > 0
    assert sent["send"].all() and sent_only.rows_written == len(sent) < whole.rows_written == len(frame)
    report = whole.to_dict(rec.bundle)
    assert sum(report["price_bands"].values()) == sum(report["categories"].values()) == len(frame)
    categories = frame["item_id"].map(bundle.catalogue.set_index("item_id")["category"]).value_counts()
    assert report["categories"] == {str(c): int(n) for c, n in categories.items()}
    assert report["reasons"][PERSONAL] == (frame["reason"] == PERSONAL).sum()


def test_customer_file_reports_instead_of_dropping(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("customer_id,segment\nc1,a\n,b\nc2,a\n c1 ,a\nc3,b\n")
    listed = read_customers(path)
    assert listed.ids.tolist() == ["c1", "c2", "c3"]
    assert (listed.rows_in, listed.empty, listed.duplicates) == (5, 1, 1)
    pd.DataFrame({"customer_id": ["b", "a", "b"]}).to_parquet(tmp_path / "list.parquet")
    assert read_customers(tmp_path / "list.parquet").ids.tolist() == ["b", "a"]


@pytest.mark.parametrize(("content", "message"), [
    ("id,email\n1,x@y\n", "no 'customer_id' column (columns: id, email)"),
    ("customer_id\n\n", "no customer ids in column customer_id"),
    ("", "cannot read it"),
])
def test_bad_customer_files_are_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        read_customers(path)
    assert str(error.value).startswith(f"--customers {path}: ") and message in str(error.value)
    pd.DataFrame({"id": [1]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no 'customer_id' column"):
        read_customers(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"use a \.csv, \.csv\.gz or \.parquet file"):
        read_customers(_touch(tmp_path / "ids.json"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_customers(tmp_path / "missing.csv")


def _touch(path: Path) -> Path:
    path.write_text("{}")
    return path


def test_every_customer_of_the_bundle_by_default(bundle: Bundle) -> None:
    listed = all_customers(bundle)
    assert listed.ids.tolist() == [str(c) for c in bundle.customers.external_ids]


def test_model_from_a_folder_and_bad_uris(bundle: Bundle, tmp_path: Path, mlflow_home: Path) -> None:
    bundle.save(tmp_path / "artifacts" / "bundle")
    loaded = load_model_uri(str(tmp_path))  # a downloaded MLflow model folder holds the bundle below
    assert loaded.version == f"local/{tmp_path.name}" and loaded.registry_version is None
    assert len(loaded.bundle.customers) == len(bundle.customers)
    for uri, message in (("models:/shoprec", "use models:/NAME@ALIAS, models:/NAME/VERSION"),
                         ("models:/shoprec/latest", "use models:/NAME@ALIAS"),
                         ("models:/shoprec@champion", "not found in the registry"),
                         (str(tmp_path / "artifacts" / "nothing"), "no such folder")):
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_model_uri(uri)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no shoprec bundle"):
        load_model_uri(str(tmp_path / "empty"))


def test_local_run_is_logged_as_a_batch_run(bundle: Bundle, tmp_path: Path, mlflow_home: Path) -> None:
    bundle.save(tmp_path / "bundle")
    result = run_job(str(tmp_path / "bundle"), str(tmp_path / "picks.csv"), k=3, only_send=True)
    run = tracking.configure().get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.params["only_send"] == "True"
    assert run.data.metrics["rows_written"] == len(pd.read_csv(tmp_path / "picks.csv")) == result.summary["rows_written"]
    assert "shoprec.source_run_id" not in run.data.tags and run.data.tags["shoprec.model_version"] == "local/bundle"


def test_the_job_applies_the_services_serving_config(bundle: Bundle, tmp_path: Path, mlflow_home: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """SHOPREC_SERVING_CONFIG sets the send rule for the endpoint and the batch alike; a bad one
    stops the job in one line before any model is loaded."""
    bundle.save(tmp_path / "bundle")
    default = run_job(str(tmp_path / "bundle"), str(tmp_path / "default.csv"), k=3, track=False)
    monkeypatch.setenv("SHOPREC_SERVING_CONFIG", '{"send_min_open_propensity": 1.0}')
    strict = run_job(str(tmp_path / "bundle"), str(tmp_path / "strict.csv"), k=3, track=False)
    assert default.summary["sent"] > 0 and strict.summary["sent"] == 0
    assert not pd.read_csv(tmp_path / "strict.csv")["send"].any()
    monkeypatch.setenv("SHOPREC_SERVING_CONFIG", '{"send_min_open_propensity": 2}')
    with pytest.raises(UserError, match="send_min_open_propensity: Input should be less than or equal to 1"):
        run_job(str(tmp_path / "nowhere"), str(tmp_path / "never.csv"), k=3, track=False)


def test_a_failed_job_keeps_the_output_and_is_logged_as_failed(bundle: Bundle, tmp_path: Path, mlflow_home: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import batch.job as picks_module

    bundle.save(tmp_path / "bundle")
    target = tmp_path / "picks.parquet"
    run_job(str(tmp_path / "bundle"), str(target), k=3, block=500)
    before = target.read_bytes()
    real, calls = picks_module.score_block, []

    def dies_after_the_first_block(*args: object) -> pd.DataFrame:
        if calls:
            raise RuntimeError("worker lost")
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(picks_module, "score_block", dies_after_the_first_block)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_job(str(tmp_path / "bundle"), str(target), k=5, block=500)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "home", "picks.parquet"]
    client = tracking.configure()
    experiment = client.get_experiment_by_name("shoprec-picks")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    assert [r.info.status for r in runs] == ["FAILED", "FINISHED"]


def test_a_file_that_is_not_parquet_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "ids.parquet").write_text("customer_id\nc1\n")
    with pytest.raises(ValueError, match=r"^--customers .*ids\.parquet: cannot read it"):
        read_customers(tmp_path / "ids.parquet")
