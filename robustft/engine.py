"""The training engine: one loop for every scheme.

The engine owns what all schemes share: the optimizer (SGD with momentum and weight decay on every
parameter), the learning-rate schedule (divided by 10 every ``lr_step`` epochs, set before every batch
for every parameter group), the model's mode (eval while attacking, train for the update), progress,
metrics, checkpoints and the run directory. A scheme only says what the loss of a batch is.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import robustft
from robustft.config import FinetuneConfig, build_config, dumps_toml
from robustft.contracts import Attack, AttackFactory, AttackResult, Scheme, TrainContext
from robustft.data import make_train_loader
from robustft.errors import BadInputError, UserError
from robustft.io import append_jsonl, save_torch
from robustft.losses import outer_loss
from robustft.models import resolve_dataset, resolve_model, select_device
from robustft.norms import Norm, eps_to_strings, format_radius
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.rundir import mark_latest, new_run_dir, write_run_info
from robustft.schedules import lr_at


class TrainingError(UserError):
    """Training cannot go on (a non-finite loss, say); the message says where."""


@dataclass
class PassCounter:
    """Forward and backward passes, counted in images (a batch of 128 through the model is 128)."""

    attack_forward: int = 0
    attack_backward: int = 0
    update_forward: int = 0
    update_backward: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class EngineContext(TrainContext):
    """The engine's implementation of :class:`robustft.contracts.TrainContext`."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        eps: Mapping[Norm, float],
        attack_factory: AttackFactory,
        attack_steps: int,
        epochs: int,
        batches_per_epoch: int,
        rng: torch.Generator,
        num_classes: int,
        config: FinetuneConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        self.model = model
        self.device = device
        self.eps = dict(eps)
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.rng = rng
        self.num_classes = num_classes
        self.epoch = 0
        self.batch = 0
        self.passes = PassCounter()
        self.config = config or FinetuneConfig(lr=0.05)
        self.optimizer = optimizer if optimizer is not None else self.make_optimizer(model)
        self._factory = attack_factory
        self._steps = self.attack_steps = attack_steps
        self._attacks: dict[Norm, Attack] = {}

    def training_attack(self, norm: Norm) -> Attack:
        if norm not in self._attacks:
            if norm not in self.eps:
                raise BadInputError(f"No radius for norm {norm}: give one with --eps {norm}=RADIUS.")
            self._attacks[norm] = self._factory.build(norm, self.eps[norm], steps=self._steps, purpose="train")
        return self._attacks[norm]

    def attack(self, norm: Norm, x: Tensor, y: Tensor, model: nn.Module | None = None) -> AttackResult:
        model = self.model if model is None else model
        attack = self.training_attack(norm)
        was_training = model.training
        model.eval()  # BatchNorm statistics stay frozen while attacking
        try:
            result = attack(model, x, y)
        finally:
            model.train(was_training)
        n = x.shape[0]
        self.passes.attack_forward += n * int(getattr(attack, "last_forward_passes", self._steps + 1))
        self.passes.attack_backward += n * int(getattr(attack, "last_backward_passes", self._steps))
        return result

    def count_passes(self, forward: int = 0, backward: int = 0, *, images: int = 1) -> None:
        self.passes.update_forward += forward * images
        self.passes.update_backward += backward * images

    def adversarial_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        if self.config.outer_loss == "trades":
            self.count_passes(forward=1, images=x.shape[0])  # the extra clean forward pass
        return outer_loss(self.config.outer_loss, model, x, x_adv, y, self.config.trades_beta)

    def lr_at(self, position: float) -> float:
        c = self.config
        return lr_at(c.lr_schedule, float(c.lr or 0.05), position, c.epochs, c.lr_step)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(model.parameters(), lr=float(c.lr or 0.05), momentum=c.momentum, weight_decay=c.weight_decay)


@dataclass
class RunResult:
    """What :func:`finetune` returns."""

    run_dir: Path
    weights: Path
    config: FinetuneConfig
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "weights": str(self.weights),
            "model": self.config.model,
            "dataset": self.config.dataset,
            "scheme": self.config.scheme,
            "epochs": self.epochs,
        }


def finetune(
    config: FinetuneConfig | None = None,
    *,
    config_file: str | Path | None = None,
    host: PluginHost | None = None,
    progress: ProgressReporter | None = None,
    **options: Any,
) -> RunResult:
    """Fine-tune a model with a scheme; write a run directory; return where it is.

    ``options`` are :class:`robustft.config.FinetuneConfig` fields (``model="digits-cnn-linf"``,
    ``scheme="e-at"``, ``epochs=3``, ``eps={"inf": "8/255"}``, ...); with ``config_file`` they override
    the file's values.
    """
    if config is None:
        config = build_config(config_file, **options)
    elif options:
        config = dataclasses.replace(config, **options)
    progress = progress or ProgressReporter()
    registries = (host or get_host()).registries

    # Resolve every name before any compute, so a typo costs nothing.
    scheme_cls = registries.schemes.get(config.scheme)
    attack_factory = registries.attacks.get(config.attack)
    zoo, info = resolve_model(config.model, registries)
    dataset = resolve_dataset(config.dataset or info.dataset, registries, **config.data_options())
    norms = tuple(config.norms or scheme_cls.default_norms)
    eps = {**dataset.default_eps, **config.eps}
    for norm in norms:
        if norm not in eps:
            raise BadInputError(f"Data set {dataset.name!r} has no default radius for norm {norm}: give --eps {norm}=RADIUS.")
        if norm not in attack_factory.norms:
            raise BadInputError(f"Attack {attack_factory.name!r} does not support norm {norm}.")
    scheme: Scheme = scheme_cls(norms, **config.options)
    device = select_device(config.device)
    config = dataclasses.replace(
        config,
        dataset=config.dataset or info.dataset,
        norms=norms,
        eps={n: eps[n] for n in norms},
        lr=config.lr or info.finetune_lr or 0.05,
    )
    run_dir = new_run_dir(info.name, scheme_cls.name, config.out)
    (run_dir / "config.toml").write_text(
        dumps_toml(config.to_toml_dict(), header=f"robustft {robustft.__version__} fine-tuning run; repeat with --config"),
        encoding="utf-8",
    )
    run_info: dict[str, Any] = {
        "robustft_version": robustft.__version__,
        "base_model": config.model,
        "zoo": zoo.name,
        "model_name": info.name,
        "dataset": config.dataset,
        "model_options": config.model_options(),
        "data_options": config.data_options(),
        "scheme": scheme_cls.name,
        "norms": [n.value for n in norms],
        "eps": eps_to_strings(config.eps),
        "status": "running",
        "started": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    write_run_info(run_dir, run_info)

    torch.manual_seed(config.seed)
    model = zoo.load(info, device=device, dataset=dataset, **config.model_options()).to(device)
    data_rng = torch.Generator().manual_seed(config.seed)
    loader = make_train_loader(dataset, config, data_rng, device)
    ctx = EngineContext(
        model=model,
        device=device,
        eps={n: float(eps[n]) for n in norms},
        attack_factory=attack_factory,
        attack_steps=config.attack_steps,
        epochs=config.epochs,
        batches_per_epoch=len(loader),
        rng=torch.Generator().manual_seed(config.seed + 1),
        num_classes=dataset.num_classes,
        config=config,
    )
    optimizer = ctx.optimizer
    metrics_path = run_dir / "metrics.jsonl"
    result = RunResult(run_dir=run_dir, weights=run_dir / "model.pt", config=config)
    progress.message(
        f"Fine-tuning {info.name} on {dataset.name} with {scheme_cls.name} "
        f"({', '.join(f'{n.label} {format_radius(eps[n])}' for n in norms)}) for {config.epochs} epoch(s) on {device}; "
        f"run folder {run_dir}"
    )

    for epoch in range(config.epochs):
        ctx.epoch, ctx.batch = epoch, 0
        epoch_start, images, loss_sum = time.perf_counter(), 0, 0.0
        passes_before = dataclasses.replace(ctx.passes)
        scheme.on_epoch_start(ctx)
        progress.start(f"epoch {epoch + 1}/{config.epochs}", len(loader))

        def step(x: Tensor, y: Tensor) -> None:
            nonlocal images, loss_sum
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr = ctx.lr_at(epoch + ctx.batch / len(loader))
            for group in optimizer.param_groups:  # every group: the reference code forgot its second one
                group["lr"] = lr
            model.train()
            loss, logs = scheme.loss(model, x, y, ctx)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"The loss became {loss.item()} at epoch {epoch + 1}, batch {ctx.batch + 1}; "
                    f"the last good checkpoint is in {run_dir / 'checkpoints'}."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            ctx.passes.update_forward += x.shape[0]
            ctx.passes.update_backward += x.shape[0]
            value = float(loss.detach())
            images += x.shape[0]
            loss_sum += value * x.shape[0]
            record = {"kind": "batch", "epoch": epoch + 1, "batch": ctx.batch + 1, "lr": lr, "loss": value, **logs}
            append_jsonl(metrics_path, record)
            shown = {"loss": loss_sum / images}
            shown.update({k.replace("rerr_", "rerr "): v for k, v in logs.items() if k.startswith("rerr_") and k != "rerr_batch"})
            progress.advance(shown)
            ctx.batch += 1

        try:
            scheme.run_epoch(ctx, loader, step)
        finally:
            progress.stop()
        seconds = time.perf_counter() - epoch_start
        passes = {k: v - getattr(passes_before, k) for k, v in ctx.passes.as_dict().items()}
        summary = {
            "kind": "epoch",
            "epoch": epoch + 1,
            "loss": loss_sum / max(images, 1),
            "seconds": seconds,
            "images": images,
            "images_per_s": images / seconds if seconds > 0 else None,
            "passes": passes,
            **scheme.on_epoch_end(ctx),
        }
        append_jsonl(metrics_path, summary)
        result.epochs.append(summary)
        save_torch(
            {
                "format": "robustft-checkpoint",
                "epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr": ctx.lr_at(epoch + 1),
                "scheme": scheme.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "data": data_rng.get_state(), "scheme": ctx.rng.get_state()},
            },
            run_dir / "checkpoints" / f"epoch-{epoch + 1:03d}.pt",
        )

    save_torch({"format": "robustft-weights", "model": model.state_dict()}, result.weights)
    run_info.update(status="finished", finished=_dt.datetime.now().isoformat(timespec="seconds"))
    write_run_info(run_dir, run_info)
    mark_latest(run_dir)
    return result
