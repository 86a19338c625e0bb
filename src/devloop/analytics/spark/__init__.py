"""The Spark engine: the reports as PySpark jobs over a store or a fleet's dataset.

Each function reads the hive-partitioned Parquet tables (``<root>/<table>/[host=H/]date=D/
hour=H/*.parquet``) with ``spark.read.parquet`` and gives the same records as the DuckDB
engine's report of the same name (``peak_usage``, ``bottlenecks``, ``efficiency``,
``export_metrics``, ``runs``, ``run_summary``; ``run_demand_spark``: the rows of autotune's run
demand that ``demand_from_store`` reads), so a fleet too large for one machine runs on a cluster
(``spark_session("spark://...")`` or ``spark-submit``) and gives the figures one machine
would. The definitions are :mod:`devloop.analytics.query`'s: CPU % of the machine from each
host's newest core count, project series at every collector tick with 0 where nothing ran, the
workspace peak the coincident one, percentiles linear between the closest ranks (Spark's exact
``percentile``, as DuckDB's ``quantile_cont``), the earliest tick among equal maxima.

What Spark reads: the Parquet files only. A store's spool (the newest minutes of a running
collector) and its rollups are not read; a fleet's dataset and its mirror have neither. A
shipped dataset is read by its folders, not its manifests: run it when no ship is running (or
read a mirror). pyspark is imported inside the functions (the ``fleet`` extra), so importing
this package costs nothing.

    session.py      the session: made, or the one running in the process (spark_engine)
    dataset.py      the tables as DataFrames, the question resolved, the per-tick series
    reports.py      peak-usage, the export, the runs and their summary
    efficiency.py   efficiency (its Python finish is the DuckDB engine's)
    bottlenecks.py  bottlenecks (its runs, ranking and drivers are the DuckDB engine's)
    demand.py       autotune's run demand: the runs and their per-tick series (its fit is local)

    spark = spark_session()                       # local[2]; or "spark://host:7077", "yarn"
    report = peak_usage_spark(spark, "s3a://fleet-metrics/devloop", TimeRange(...))
    report.to_json()                              # == peak_usage(...).to_json()
"""

from devloop.analytics.spark.bottlenecks import bottlenecks_spark
from devloop.analytics.spark.dataset import TABLES, Dataset, dataset_root
from devloop.analytics.spark.demand import RunDemandRows, run_demand_spark
from devloop.analytics.spark.efficiency import efficiency_spark
from devloop.analytics.spark.reports import (
    SUMMARY_KINDS,
    export_spark,
    peak_usage_spark,
    run_summary_spark,
    runs_spark,
)
from devloop.analytics.spark.session import (
    DEFAULT_MASTER,
    check_spark,
    spark_engine,
    spark_session,
)

__all__ = [
    "DEFAULT_MASTER",
    "SUMMARY_KINDS",
    "TABLES",
    "Dataset",
    "RunDemandRows",
    "bottlenecks_spark",
    "check_spark",
    "dataset_root",
    "efficiency_spark",
    "export_spark",
    "peak_usage_spark",
    "run_demand_spark",
    "run_summary_spark",
    "runs_spark",
    "spark_engine",
    "spark_session",
]
