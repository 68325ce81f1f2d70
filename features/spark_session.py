"""The Spark session both Spark engines use: the picks job (batch/spark.py) and the load (features/spark_loading.py).

pyspark is an optional dependency (extra ``spark``): it is imported only when a session is asked for.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from features.errors import UserError, first_line

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_LOCAL_MASTER = "local[2]"
_ADDRESS = r"(\[[0-9A-Fa-f:.]+\]|[^,/:@\s\[\]]+):[0-9]+"
MASTER_URL = re.compile(r"local(\[([0-9]+|\*)\]|\[([0-9]+|\*)\s*,\s*[0-9]+\])?"
                        r"|local-cluster\[\s*[0-9]+\s*,\s*[0-9]+\s*,\s*[0-9]+\s*\]"
                        rf"|spark://{_ADDRESS}(,{_ADDRESS})*|yarn|(?!local|spark)[a-z][a-z0-9+.-]*://\S+")
"""Master URLs as Spark 4's SparkContext reads them (its ``SparkMasterRegex``): its own forms
(local, local-cluster, standalone with one or more HOST:PORT, YARN) exactly; any other
``scheme://...`` is left to a cluster manager plugin (Kubernetes' ``k8s://`` is one)."""
MASTER_CONNECT_TIMEOUT_S = 5.0


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
        if defaults.is_file() and any(re.match(r"\s*spark\.master\s*[\s=:]", line)
                                      for line in defaults.read_text().splitlines()):  # Java properties: "key value", "key=value"
            return True
    return False


def _chosen_master(master: str | None) -> tuple[str | None, str]:
    """The master a new session gets and where it was named (for messages); ``None`` leaves it
    to spark-submit, ``PYSPARK_SUBMIT_ARGS``, ``MASTER`` or spark-defaults.conf."""
    if master is not None:
        return master, "the caller"
    if os.environ.get("SPARK_MASTER"):
        return os.environ["SPARK_MASTER"], "SPARK_MASTER"
    if _master_configured():
        return None, "Spark's settings"
    return DEFAULT_LOCAL_MASTER, "the default"


def check_master(master: str, named_by: str) -> None:
    """Refuse, in one line, a master URL Spark cannot parse or a standalone master nobody answers at
    (each address is tried for :data:`MASTER_CONNECT_TIMEOUT_S`, after its name is looked up).

    Spark itself reports both only after its JVM has started: a parse error as a Java stack
    trace, an unreachable ``spark://`` master after a minute of retries.
    """
    where = f"{master} (from {named_by})"
    if not MASTER_URL.fullmatch(master):
        raise UserError(f"Spark master {where} is not a master URL: use local[N], spark://HOST:PORT, yarn or k8s://URL")
    if not master.startswith("spark://"):
        return
    failures = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        if not 0 < int(port) < 65536:
            raise UserError(f"Spark master {where}: port {port} is not a TCP port (1-65535)")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=MASTER_CONNECT_TIMEOUT_S).close()
            return
        except OSError as error:
            failures.append(f"{address}: {error.strerror or error}")
    raise UserError(f"cannot reach the Spark master {where}: {'; '.join(failures)}")


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
    master, _ = _chosen_master(master)
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
    caller stops only a session it started: a notebook's own stays up). No pyspark, no Java,
    a malformed master URL or an unreachable standalone master is one line for the CLI."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise UserError("--engine spark needs pyspark and Java 17+: pip install 'shoprec[spark]'") from None
    # pyspark 4 warns on every pandas UDF that pandas 3 is "not yet fully supported"; the tests
    # hold both engines equal under pandas 3, so the warning tells a user nothing.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark import SparkContext

    already = SparkSession.getActiveSession()
    master, named_by = _chosen_master(None)
    running = already is not None or SparkContext._active_spark_context is not None  # another thread's, reused
    if not running and not os.environ.get("SPARK_REMOTE") and master is not None:
        check_master(master, named_by)
    try:
        session = spark_session(app_name)
    except Exception as error:  # noqa: BLE001 - no Java, a master that refuses us: one line for the CLI
        on = f" on {master} (from {named_by})" if master is not None and not running else ""
        raise UserError(f"--engine spark: cannot start Spark{on} ({first_line(error)})") from error
    return session, already is None
