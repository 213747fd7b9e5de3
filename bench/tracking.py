"""Opt-in experiment tracking (``--log tensorboard,csv,wandb``), built on Avalanche's loggers.

Each run logs into ``<out>/<stream>/logs/<row>/seed<k>/``: the training loss and its InfoNCE part per epoch
(``train/loss``, ``train/infonce``) and, after each step's evaluation, the mean over the tasks seen so far of
R@10, zero-shot Acc and the alignment deviation (``eval/r10_seen``, ``eval/acc_seen``, ``eval/align_dev_old``).
The x axis is the number of epochs trained so far (evaluations sit at the end of their step), one
increasing counter, as W&B requires. ``tensorboard`` is Avalanche's ``TensorboardLogger``; ``csv`` a
``BaseLogger`` writing ``metrics.csv`` (name, x, value); ``wandb`` Avalanche's ``WandBLogger``, offline unless
``WANDB_MODE`` says otherwise (it never asks for a login; ``WANDB_MODE=disabled`` turns it off).
"""
from __future__ import annotations

import csv
import math
import os
import uuid
from pathlib import Path

from .errors import BenchError

LOGGERS = ("tensorboard", "csv", "wandb")


def parse_log(text: str | None) -> tuple[str, ...]:
    """``--log a,b`` → the loggers, validated (known names, their packages installed)."""
    if text is None:
        return ()
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise BenchError(f"--log {text!r} names no logger; choose from {', '.join(LOGGERS)}")
    for n in names:
        if n not in LOGGERS:
            raise BenchError(f"--log {text}: unknown logger {n!r}; choose from {', '.join(LOGGERS)}")
    need = {"tensorboard": "tensorboard", "wandb": "wandb"}
    import importlib.util
    for n in names:
        if n in need and importlib.util.find_spec(need[n]) is None:
            raise BenchError(f"--log {n}: the {need[n]!r} package is not installed (pip install {need[n]})")
    return names


def _wandb_logger_class():
    from avalanche.logging import WandBLogger

    class WandB(WandBLogger):
        """Avalanche's W&B logger without the calls that newer wandb releases no longer have
        (``wandb.util.generate_id``, ``run._label``, ``wandb.viz``): its start and scalar logging replaced."""

        def before_run(self):
            if self.wandb is None:
                self.import_wandb()
            self.init_kwargs = dict(self.init_kwargs or {})
            self.init_kwargs.setdefault("id", os.environ.get("WANDB_RUN_ID") or uuid.uuid4().hex[:8])
            self.wandb.init(**self.init_kwargs)

        def log_single_metric(self, name, value, x_plot):     # scalars only (Avalanche's refers to wandb.viz)
            self.wandb.log({name: value}, step=x_plot)

    return WandB


def _csv_logger_class():
    from avalanche.logging import BaseLogger

    class CSVMetricLogger(BaseLogger):
        """Every metric as one row of ``metrics.csv``: name, x, value."""

        def __init__(self, folder: Path):
            super().__init__()
            self.file = open(folder / "metrics.csv", "w", newline="")
            self.writer = csv.writer(self.file)
            self.writer.writerow(["name", "x", "value"])

        def log_single_metric(self, name, value, x_plot):
            self.writer.writerow([name, x_plot, repr(float(value))])
            self.file.flush()

        def close(self):
            self.file.close()

    return CSVMetricLogger


class RunLog:
    """The loggers of one run."""

    def __init__(self, names: tuple[str, ...], folder: Path, run_name: str, config: dict):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.loggers, self.x = [], 0
        if "tensorboard" in names:
            from avalanche.logging import TensorboardLogger
            self.loggers.append(TensorboardLogger(tb_log_dir=self.folder / "tensorboard"))
        if "csv" in names:
            self.loggers.append(_csv_logger_class()(self.folder))
        if "wandb" in names:
            os.environ.setdefault("WANDB_MODE", "offline")      # never a login prompt
            os.environ.setdefault("WANDB_SILENT", "true")
            self.loggers.append(_wandb_logger_class()(project_name="cmcl-bench", run_name=run_name, dir=str(self.folder),
                                            save_code=False, config=config,
                                            params={"reinit": "finish_previous", "mode": os.environ["WANDB_MODE"]}))

    def _log(self, name: str, value: float, x: int):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        for lg in self.loggers:
            lg.log_single_metric(name, float(value), x)

    def step_trained(self, timing: dict):
        for loss, nce in zip(timing.get("loss", ()), timing.get("infonce", ())):
            self.x += 1
            self._log("train/loss", loss, self.x)
            self._log("train/infonce", nce, self.x)

    def evaluated(self, row: dict, learned: int):
        """After step ``learned`` (1..T): the means over the tasks seen so far (and the old ones)."""
        def seen(key, upto):
            vals = [v for v in row[key][:upto] if v is not None and not math.isnan(v)]
            return sum(vals) / len(vals) if vals else None
        self._log("eval/r10_seen", seen("r10", learned), self.x)
        self._log("eval/acc_seen", seen("acc", learned), self.x)
        if learned >= 2:
            self._log("eval/align_dev_old", seen("align_dev", learned - 1), self.x)

    def close(self):
        for lg in self.loggers:
            if hasattr(lg, "writer") and hasattr(lg.writer, "close"):
                lg.writer.close()
            if hasattr(lg, "close"):
                lg.close()
            if getattr(lg, "wandb", None) is not None and lg.wandb.run is not None:
                lg.wandb.finish()
