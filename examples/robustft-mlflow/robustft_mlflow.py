"""``--log mlflow``: a robustft run's metrics, configuration and results in MLflow (an example logger plugin).

Where: the tracking URI in ``MLFLOW_TRACKING_URI`` when set (a server, or ``sqlite:///...``), else a local
file store in the run folder, ``<run>/mlruns`` (no server; browse it with ``mlflow ui --backend-store-uri
<run>/mlruns``). MLflow 3 keeps its file store in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE=true``; this plugin sets that for the local store it chose itself (never when you
chose the URI). The experiment is ``MLFLOW_EXPERIMENT_NAME`` or ``robustft``; the MLflow run is named after
the run folder, and its id is kept in ``<run>/mlflow-run-id`` so that ``robustft finetune --resume`` and
``robustft compare`` (which evaluates a run after training it) continue the same MLflow run.

What: the configuration (config.toml's settings, nested keys joined with dots) as parameters; per batch the
numbers of the record as metrics ``batch.<key>`` at step = batches trained so far; per epoch ``epoch.<key>``
at the epoch's last batch; at the end ``eval.<key>`` (clean, robust.<norm>, union) or ``final.<key>``.
MLflow cannot delete metrics, so a resumed run logs the batches after its checkpoint again, at the same steps.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustft.plugin import RunLogger, UserError, flatten, hookimpl, scalars

RUN_ID_FILE = "mlflow-run-id"
STORE_DIR = "mlruns"
DEFAULT_EXPERIMENT = "robustft"
#: MLflow's limit on a parameter's value (characters).
PARAM_LIMIT = 500
#: Keys that are positions, not measurements.
POSITION = ("epoch", "batch")


def param_name(key: str) -> str:
    """A config key as MLflow allows names (letters, digits, ``_-. /``): the per-norm wildcard ``*`` is ``all``."""
    return re.sub(r"[^\w\-. /]", "_", key.replace("*", "all"))


class MlflowLogger(RunLogger):
    name = "mlflow"
    description = "MLflow tracking: MLFLOW_TRACKING_URI, else a local file store in <run>/mlruns"

    def __init__(self) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("The mlflow logger needs the mlflow package: pip install mlflow-skinny.") from None
        self._client_cls = MlflowClient
        self.run_id: str | None = None
        self.step = 0

    def open(self, run_dir: Path, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> None:
        from mlflow.entities import Param

        run_dir = Path(run_dir).resolve()
        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir / STORE_DIR).as_uri()
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # the local store is our choice, not the user's
        self.client = client = self._client_cls(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(name)
        id_file = run_dir / RUN_ID_FILE
        self.step = sum(1 for r in history if r.get("kind") == "batch")
        if history and id_file.is_file():  # a resumed or evaluated run continues its MLflow run
            self.run_id = id_file.read_text(encoding="utf-8").strip()
            client.update_run(self.run_id, status="RUNNING")
            return
        run = client.create_run(experiment_id, run_name=run_dir.name, tags={"robustft.run_dir": str(run_dir)})
        self.run_id = run.info.run_id
        id_file.write_text(self.run_id + "\n", encoding="utf-8")
        settings = {k: v for k, v in config.items() if k != "provenance"}  # where each setting came from: not a parameter
        params = [Param(param_name(key), str(value)[:PARAM_LIMIT]) for key, value in flatten(settings).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters per call
            client.log_batch(self.run_id, params=params[start : start + 100])

    def _metrics(self, prefix: str, record: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        values = scalars({k: v for k, v in record.items() if k not in POSITION})
        metrics = [Metric(f"{prefix}.{key}", value, now, self.step) for key, value in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log(self, record: Mapping[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "batch":
            self.step += 1
        if kind in ("batch", "epoch"):
            self._metrics(str(kind), record)

    def summary(self, summary: Mapping[str, Any]) -> None:
        self._metrics(str(summary.get("kind", "final")), summary)

    def close(self) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id)


@hookimpl
def register_loggers(register) -> None:
    register(MlflowLogger)
