"""The Spark session both Spark engines use: the picks job (batch/spark.py) and the load (features/spark_loading.py).

pyspark is an optional dependency (extra ``spark``): it is imported only when a session is asked for.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from features.errors import UserError, first_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_LOCAL_MASTER = "local[2]"


def _master_configured() -> bool:
    """Whether Spark's usual settings already name a master (spark-submit, PYSPARK_SUBMIT_ARGS,
    MASTER, spark-defaults.conf); pyspark itself would silently fall back to ``local[*]``."""
    if "PYSPARK_GATEWAY_PORT" in os.environ or os.environ.get("MASTER"):
        return True  # launched by spark-submit / the pyspark shell, or the classic MASTER variable
    if "--master" in os.environ.get("PYSPARK_SUBMIT_ARGS", ""):
        return True
    conf_dirs = [os.environ.get("SPARK_CONF_DIR"),
                 os.path.join(os.environ["SPARK_HOME"], "conf") if os.environ.get("SPARK_HOME") else None]
    for folder in filter(None, conf_dirs):
        defaults = Path(folder) / "spark-defaults.conf"
        if defaults.is_file() and any(line.split()[:1] == ["spark.master"]
                                      for line in defaults.read_text().splitlines()):
            return True
    return False


def spark_session(app_name: str = "shoprec", master: str | None = None) -> SparkSession:
    """A Spark session from the usual settings.

    In order: an explicit ``master``; an active session (reused as it is); ``SPARK_REMOTE``
    (Spark Connect: the server decides); ``SPARK_MASTER``; a master given by spark-submit,
    ``PYSPARK_SUBMIT_ARGS``, ``MASTER`` or spark-defaults.conf; else ``local[2]``. A local
    master gets 4 shuffle partitions, no UI and this Python for its workers.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    builder = SparkSession.builder.appName(app_name)
    if master is None and os.environ.get("SPARK_REMOTE"):
        return builder.getOrCreate()
    master = master or os.environ.get("SPARK_MASTER") or (None if _master_configured() else DEFAULT_LOCAL_MASTER)
    if master is not None:
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # Local workers are forked by this JVM: make them run this interpreter, not `python3` on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = (builder.config("spark.sql.shuffle.partitions", "4")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false"))
    spark = builder.getOrCreate()
    try:
        spark.sparkContext.setLogLevel("WARN")
    except Exception:  # noqa: BLE001 - Spark Connect has no SparkContext; the server owns its logs
        pass
    return spark


def start_spark(app_name: str) -> tuple[SparkSession, bool]:
    """The session an ``--engine spark`` command runs on, and whether this call started it (a
    caller stops only a session it started: a notebook's own stays up). No pyspark, no Java
    or a bad master URL is one line for the CLI."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UserError("--engine spark needs pyspark and Java 17+: pip install 'shoprec[spark]'") from None
    # pyspark 4 warns on every pandas UDF that pandas 3 is "not yet fully supported"; the tests
    # hold both engines equal under pandas 3, so the warning tells a user nothing.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    already = SparkSession.getActiveSession()
    try:
        session = spark_session(app_name)
    except Exception as error:  # noqa: BLE001 - no Java, a bad master URL: one line for the CLI
        raise UserError(f"--engine spark: cannot start Spark ({first_line(error)})") from error
    return session, already is None
