"""The Spark session the reports run in: made here, or the one already running in the process.

pyspark is an optional dependency (the ``fleet`` extra) and needs a Java runtime: both are
checked before anything starts, so a missing one is a one-line :class:`UsageError` naming what
to install, never a Java gateway's traceback.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from devloop.errors import UsageError

#: The default master: two local threads (the machines the project runs on have two cores).
DEFAULT_MASTER = "local[2]"


def check_spark() -> None:
    """Raise :class:`UsageError` when pyspark or a Java runtime is missing."""
    if importlib.util.find_spec("pyspark") is None:
        raise UsageError("the Spark engine needs pyspark: pip install 'devloop-workspace[fleet]'")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise UsageError("the Spark engine needs a Java runtime (JDK 17 or later) on the PATH")


@contextmanager
def spark_engine(master: str | None = DEFAULT_MASTER) -> Iterator[Any]:
    """A session for a report: the one already active in this process (a notebook's, a test's),
    left running; otherwise a new one on ``master`` (:func:`spark_session`), stopped when the
    block ends. Raises :class:`UsageError` when pyspark or Java is missing, or when Spark
    cannot start."""
    check_spark()
    from pyspark.errors import PySparkException
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    try:
        spark = spark_session(master)
    except (PySparkException, OSError) as exc:  # the JVM did not start
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"cannot start Spark on {master}: {first}") from exc
    try:
        yield spark
    finally:
        spark.stop()


def spark_session(
    master: str | None = DEFAULT_MASTER,
    *,
    driver_memory: str = "1g",
    shuffle_partitions: int = 4,
    app_name: str = "devloop",
    java_options: str = "",
    config: dict[str, str] | None = None,
) -> Any:
    """A SparkSession for the reports: ``master`` (``local[2]``, ``spark://host:7077``,
    ``yarn``...; None under ``spark-submit``: its ``--master`` then), a small driver, no UI, few
    shuffle partitions (the aggregates are small), session time zone UTC. ``config``: more
    settings (``spark.hadoop.fs.s3a.endpoint``, say); ``java_options``: more options of the
    driver's JVM (``-XX:TieredStopAtLevel=1`` starts a short job sooner). Returns the
    existing session when one runs in this process (then the JVM's settings no longer
    apply)."""
    from pyspark.sql import SparkSession

    builder = SparkSession.builder if master is None else SparkSession.builder.master(master)
    builder = (
        builder.appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.driver.extraJavaOptions", f"-Duser.timezone=UTC {java_options}".strip())
    )
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
