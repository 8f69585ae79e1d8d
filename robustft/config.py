"""Run configuration: defaults < ``--config run.toml`` < command-line options.

A run directory stores the fully resolved configuration as ``config.toml``; the same file can be
passed back with ``--config`` to repeat the run.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from robustft import per_norm
from robustft.errors import BadInputError, UserError
from robustft.norms import Norm, eps_to_strings, normalise_eps, parse_norms

DEFAULT_MODEL = "digits-cnn-linf"
#: The learning rate when neither the run, the model nor the data set's recipe gives one (E-AT App. A's rate
#: for small networks such as PreAct ResNet-18).
DEFAULT_LR = 0.05


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs. Field names are the TOML keys (and the CLI options)."""

    model: str = DEFAULT_MODEL
    dataset: str | None = None  # default: the data set the model was trained on
    scheme: str = "e-at"
    norms: tuple[Norm, ...] | None = None  # default: the scheme's default norms
    eps: dict[Norm, Fraction] = field(default_factory=dict)  # default: the data set's radii
    epochs: int = 3
    batch_size: int = 128
    lr: float | None = None  # default: the model's fine-tuning lr, else the recipe's, else DEFAULT_LR
    lr_step: float | None = None  # epochs between divisions of the lr by 10; default: a third of the run
    lr_schedule: str = "step"  # step (fine-tuning), piecewise or cyclic (from scratch)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # Training attack per norm (robustft.per_norm): "*" is every norm not named.
    attack: dict[str, str] = field(default_factory=lambda: {per_norm.ALL: "apgd"})
    attack_steps: dict[str, int] = field(default_factory=lambda: {per_norm.ALL: 10})
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # the attack family's own options
    outer_loss: str = "ce"  # ce or trades
    trades_beta: float = 6.0
    options: dict[str, str] = field(default_factory=dict)  # scheme options
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    n_train: int | None = None  # use only the first N training points (quick experiments)
    workers: int | None = None  # data-loading processes (default: 0 on CPU, up to 4 on CUDA)
    # The GPU path (issue 5): None / "auto" means on for CUDA, off for the CPU (numerically unchanged).
    amp: str = "auto"  # mixed precision: bf16 autocast, fp16 autocast with a gradient scaler, or off
    attack_precision: str = "fp32"  # training attacks in fp32 (the papers' code), or "amp": the run's autocast
    channels_last: bool | None = None
    cudnn_benchmark: bool | None = None
    compile: bool = False  # torch.compile the model for the updates and attacks
    pin_memory: bool | None = None  # page-locked training batches (faster, asynchronous copies to the GPU)
    checkpoint_every: int = 0  # also checkpoint every N batches within an epoch (0: at epoch ends only)
    max_nan_batches: int = 0  # batches with a non-finite loss to skip (no update) before the run stops
    # Where models and data come from (passed to the zoo and the data set plugin when set).
    model_dir: str | None = None
    checkpoint: str | None = None
    arch: str | None = None
    data_dir: str | None = None
    image_size: int | None = None
    extra_data: str | None = None
    download: bool | None = None
    skip_bad_images: bool | None = None  # image folders: leave out unreadable files instead of stopping
    # Not settings: where each setting came from ("default", "recipe cifar10 (...)", "config file ...",
    # "option", ...; written to config.toml as the [provenance] table) and the layers it was built from,
    # so that pre-flight can put the data set's recipe under them (with_recipe).
    provenance: dict[str, str] = field(default_factory=dict, compare=False)
    layers: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=(), compare=False, repr=False)

    def model_options(self) -> dict[str, Any]:
        return {k: v for k, v in (("model_dir", self.model_dir), ("checkpoint", self.checkpoint), ("arch", self.arch), ("download", self.download)) if v is not None}

    def data_options(self) -> dict[str, Any]:
        return {k: v for k, v in (("data_dir", self.data_dir), ("image_size", self.image_size), ("extra_data", self.extra_data), ("download", self.download),
                                            ("skip_bad_images", self.skip_bad_images)) if v is not None}

    def to_toml_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in NOT_SETTINGS:
                continue
            if f.name == "norms":
                value = [n.value for n in value]
            elif f.name == "eps":
                value = eps_to_strings(value)
            elif f.name in PER_NORM_FIELDS:
                value = per_norm.to_toml(value)
                if value == {}:
                    continue
            data[f.name] = value
        if self.provenance:
            data["provenance"] = {k: self.provenance[k] for k in data if k in self.provenance}
        return data


_INT_FIELDS = {"epochs", "batch_size", "seed", "n_train", "workers", "image_size", "checkpoint_every", "max_nan_batches"}
#: Settings that change how a run is carried out, not what it computes: ``--resume`` accepts new values.
OPERATIONAL_FIELDS = frozenset(
    {"device", "workers", "checkpoint_every", "max_nan_batches", "amp", "channels_last", "cudnn_benchmark", "compile", "pin_memory"}
)
_BOOL_FIELDS = {"download", "skip_bad_images", "channels_last", "cudnn_benchmark", "compile", "pin_memory"}
_FLOAT_FIELDS = {"lr", "lr_step", "momentum", "weight_decay", "trades_beta"}
_CHOICES = {
    "lr_schedule": ("step", "piecewise", "cyclic"),
    "outer_loss": ("ce", "trades"),
    "amp": ("auto", "bf16", "fp16", "off"),
    "attack_precision": ("fp32", "amp"),
}
_POSITIVE = {"epochs", "batch_size", "lr", "lr_step"}
#: Seeds are offset per process and per purpose (seed + 1, seed + 1_000_003 * rank): keep them well inside 64 bits.
MAX_SEED = 2**62
#: FinetuneConfig fields that are not settings (never read from a file or an option).
NOT_SETTINGS = frozenset({"provenance", "layers"})
#: Settings kept per norm (robustft.per_norm).
PER_NORM_FIELDS = frozenset({"attack", "attack_steps", "attack_options"})


def _attack_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInputError(f"An attack is named by a string such as 'apgd', got {value!r}.")
    return value.strip()


def _attack_steps(value: Any) -> int:
    if isinstance(value, str):
        value = per_norm.literal(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInputError(f"Attack steps must be a positive integer, got {value!r}.")
    return value


def _attack_option_table(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise BadInputError(f"Attack options of a norm must be a table such as {{topk = 0.1}}, got {value!r}.")
    return {str(k): v for k, v in value.items()}


def convert_attack_options(value: Any) -> dict[str, dict[str, Any]]:
    """``{topk = 0.1}`` (every norm), ``{1 = {topk = 0.1}}`` (one norm), or both mixed, as a per-norm table."""
    if not isinstance(value, Mapping):
        raise BadInputError("'attack_options' must be a table such as {topk = 0.1} or {1 = {topk = 0.1}}.")
    every = {str(k): v for k, v in value.items() if not isinstance(v, Mapping)}
    tables = per_norm.normalise({k: v for k, v in value.items() if isinstance(v, Mapping)}, "attack_options", _attack_option_table)
    if every:
        tables[per_norm.ALL] = {**tables.get(per_norm.ALL, {}), **every}
    return tables


def merge_attack_options(base: Mapping[str, dict[str, Any]], layer: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged = {k: dict(v) for k, v in base.items()}
    for key, table in layer.items():
        merged[key] = {**merged.get(key, {}), **table}
    return merged


def _convert(name: str, value: Any, source: str) -> Any:
    try:
        if name == "attack":
            return per_norm.normalise(value, f"{source}: 'attack'", _attack_name)
        if name == "attack_steps":
            return per_norm.normalise(value, f"{source}: 'attack_steps'", _attack_steps)
        if name == "attack_options":
            return convert_attack_options(value)
        if name == "norms":
            if not isinstance(value, (str, list, tuple)):
                raise BadInputError(f"{source}: 'norms' must be a list such as [\"1\", \"inf\"] or a string such as \"1,inf\".")
            return parse_norms(value if isinstance(value, str) else [str(v) for v in value])
        if name == "eps":
            if not isinstance(value, Mapping):
                raise BadInputError(f"{source}: 'eps' must be a table such as {{inf = \"8/255\", 1 = 12}}.")
            return normalise_eps({str(k): (str(v) if not isinstance(v, str) else v) for k, v in value.items()})
        if name == "options":
            if not isinstance(value, Mapping):
                raise BadInputError(f"{source}: 'options' must be a table of scheme options.")
            return {str(k): str(v) if not isinstance(v, bool) else str(v).lower() for k, v in value.items()}
        if name in _BOOL_FIELDS:
            if not isinstance(value, bool):
                raise BadInputError(f"{source}: {name!r} must be true or false, got {value!r}.")
        elif name in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadInputError(f"{source}: {name!r} must be an integer, got {value!r}.")
        elif name in _FLOAT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BadInputError(f"{source}: {name!r} must be a number, got {value!r}.")
            value = float(value)
        elif not isinstance(value, str):
            raise BadInputError(f"{source}: {name!r} must be a string, got {value!r}.")
    except BadInputError:
        raise
    if name in _CHOICES and value not in _CHOICES[name]:
        raise BadInputError(f"{source}: {name!r} must be one of {', '.join(_CHOICES[name])}, got {value!r}.")
    if name in _POSITIVE and value <= 0:
        raise BadInputError(f"{source}: {name!r} must be positive, got {value!r}.")
    if name in {"weight_decay", "momentum", "seed", "workers", "trades_beta", "checkpoint_every", "max_nan_batches"} and value < 0:
        raise BadInputError(f"{source}: {name!r} must not be negative, got {value!r}.")
    if name == "seed" and value >= MAX_SEED:
        raise BadInputError(f"{source}: 'seed' must be below 2**62, got {value}.")
    if name in {"n_train", "image_size"} and value <= 0:
        raise BadInputError(f"{source}: {name!r} must be positive, got {value!r}.")
    return value


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"Config file {str(path)!r} is a folder; give the TOML file (a run's is <run>/config.toml).")
    if not path.is_file():
        raise UserError(f"Config file {str(path)!r} does not exist.")
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"Config file {str(path)!r} is not valid TOML ({exc}).") from None
    except UnicodeDecodeError:
        raise BadInputError(f"Config file {str(path)!r} is not valid TOML (it is not UTF-8 text).") from None
    except OSError as exc:
        raise UserError(f"Config file {str(path)!r} cannot be read ({exc.strerror}).") from None


OPTION_SOURCE = "option"  # a command-line option or a keyword argument of robustft.finetune


def build_config(file: str | Path | None = None, **overrides: Any) -> FinetuneConfig:
    """Defaults, then the TOML file, then the non-None ``overrides`` (command-line options)."""
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if file is not None:
        data = read_toml(file)
        section = data.get("finetune", data)
        if not isinstance(section, Mapping):
            raise BadInputError(f"Config file {str(file)!r}: 'finetune' must be a table of settings.")
        # A run's config.toml carries its [provenance]: a record, not a setting; this read is the new source.
        layers.append((f"config file {str(file)!r}", {k: v for k, v in section.items() if k != "provenance"}))
    layers.append((OPTION_SOURCE, {k: v for k, v in overrides.items() if v is not None}))
    return _from_layers(layers)


def with_recipe(config: FinetuneConfig, name: str, recipe: Mapping[str, Any], source: str = "") -> FinetuneConfig:
    """``config`` with a data set's recipe between robustft's defaults and the layers ``config`` came from.

    A setting changed after the layers were read (``dataclasses.replace``, as compare does per run; or a
    FinetuneConfig built by hand, which has no layers) keeps its value: the recipe only fills in defaults.
    """
    if not recipe:
        return config
    label = f"recipe {name}" + (f" ({source})" if source else "")
    plain = _from_layers(list(config.layers))
    rebuilt = _from_layers([(label, recipe), *config.layers])
    changes: dict[str, Any] = {}
    provenance = dict(rebuilt.provenance)
    for f in dataclasses.fields(FinetuneConfig):
        if f.name in NOT_SETTINGS:
            continue
        if getattr(config, f.name) != getattr(plain, f.name):  # set after the layers: keep it
            provenance[f.name] = config.provenance.get(f.name, OPTION_SOURCE)
        else:
            changes[f.name] = getattr(rebuilt, f.name)
    return dataclasses.replace(config, **changes, provenance=provenance, layers=rebuilt.layers)


def _from_layers(layers: list[tuple[str, Mapping[str, Any]]]) -> FinetuneConfig:
    config = FinetuneConfig()
    known = {f.name for f in dataclasses.fields(FinetuneConfig)} - NOT_SETTINGS
    provenance = {name: "default" for name in known}
    for source, layer in layers:
        described = source[0].upper() + source[1:]  # as error messages start
        for key, value in layer.items():
            name = key.replace("-", "_")
            if name not in known:
                from robustft.errors import UnknownNameError

                raise UnknownNameError(f"setting in {source}", key, sorted(known))
            if name == "eps" and isinstance(value, Mapping) and all(isinstance(k, Norm) for k in value):
                converted = dict(value)
            elif name == "norms" and isinstance(value, tuple) and all(isinstance(n, Norm) for n in value):
                converted = value
            else:
                converted = _convert(name, value, described)
            # tables merge key by key; a per-norm value for every norm replaces the table
            merged = name in {"eps", "options", "attack_options"} or (name in {"attack", "attack_steps"} and per_norm.ALL not in converted)
            if name in {"eps", "options"}:
                converted = {**getattr(config, name), **converted}
            elif name in {"attack", "attack_steps"}:
                converted = per_norm.merge(getattr(config, name), converted)
            elif name == "attack_options":
                converted = merge_attack_options(config.attack_options, converted)
            setattr(config, name, converted)
            provenance[name] = f"{provenance[name]} + {source}" if merged else source
    config.provenance = provenance
    config.layers = tuple(layers)
    return config


# ------------------------------------------------------------------------------------- TOML output


def dumps_toml(data: Mapping[str, Any], header: str = "") -> str:
    """``data`` as TOML (tomli-w, which escapes every string TOML needs escaped), after a comment header."""
    import tomli_w

    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + tomli_w.dumps(dict(data))
