"""Run configuration: defaults < ``--config run.toml`` < command-line options.

A run directory stores the fully resolved configuration as ``config.toml``; the same file can be
passed back with ``--config`` to repeat the run.

:class:`FinetuneConfig` is the one description of the fine-tuning settings: each field holds its default
and, as ``dataclasses.field`` metadata (:class:`Setting`), its command-line spelling, help, value format,
allowed values and help panel. The config-file reader below checks values with it, and the command line
(robustft/cli_settings.py) generates the options of ``robustft finetune`` and ``robustft compare`` from it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from robustft import per_norm, setting_values
from robustft.errors import BadInputError, UserError
from robustft.norms import Norm, eps_to_strings, normalise_eps, parse_norms
from robustft.setting_values import convert_attack_options, merge_attack_options

DEFAULT_MODEL = "digits-cnn-linf"
#: The learning rate when neither the run, the model nor the data set's recipe gives one (E-AT App. A's rate
#: for small networks such as PreAct ResNet-18).
DEFAULT_LR = 0.05
#: Seeds are offset per process and per purpose (seed + 1, seed + 1_000_003 * rank): keep them well inside 64 bits.
MAX_SEED = 2**62

# ------------------------------------------------------------------------------ setting metadata

#: The help panels of ``robustft finetune --help``, in their order.
MODEL_AND_DATA, THREAT_MODEL, SCHEME, TRAINING_ATTACK, OPTIMISATION, RUN, PERFORMANCE = PANELS = (
    "Model and data",
    "Threat model",
    "Scheme",
    "Training attack",
    "Optimisation",
    "Run and checkpoints",
    "Performance",
)
#: The ``dataclasses.field`` metadata key of a setting's :class:`Setting`.
SETTING = "robustft.setting"


@dataclass(frozen=True)
class Setting:
    """How a :class:`FinetuneConfig` field is given (command line, config file) and checked.

    The value type comes from the field's annotation and the default from the field itself; ``help`` says
    neither, because the command line adds the default (or ``default_text``, where the default is a rule such as
    "the scheme's norms") to it.
    """

    help: str
    panel: str
    flags: tuple[str, ...] = ()  # option spellings; default --field-name (--name/--no-name for a switch)
    metavar: str | None = None  # the value's format: NORM=RADIUS, [NORM=]STEPS, ...
    choices: tuple[str, ...] = ()
    minimum: Literal["positive", "non-negative"] | None = None
    # A repeatable option: its items (["inf=5", "1=15"]) to the setting's value; called with the option's flag.
    items: Callable[[Sequence[str], str], Any] | None = None
    default_text: str | None = None  # the default, said in words
    compare_help: str | None = None  # its help in robustft compare, where it means something more there
    in_compare: bool = True  # False: robustft compare sets it per run (--schemes, --out; --norms are evaluation norms)
    operational: bool = False  # how a run is carried out, not what it computes: --resume accepts new values


def setting(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, **description: Any) -> Any:
    """A :class:`FinetuneConfig` field with its :class:`Setting`."""
    return field(default=default, default_factory=factory, metadata={SETTING: Setting(**description)})


# Command-line items of the repeatable options (the config file gives the same values as TOML tables).


# ------------------------------------------------------------------------------------- the settings


@dataclass
class FinetuneConfig:
    """Everything a fine-tuning run needs. Field names are the TOML keys (and, with dashes, the CLI options)."""

    model: str = setting(
        DEFAULT_MODEL, help="Base model", panel=MODEL_AND_DATA, metavar="[ZOO:]NAME", default_text=f"the built-in {DEFAULT_MODEL}"
    )
    dataset: str | None = setting(
        None, help="Data set", panel=MODEL_AND_DATA, metavar="NAME", default_text="the one the model was trained on"
    )
    scheme: str = setting("e-at", help="Training scheme; see 'robustft list schemes'", panel=SCHEME, metavar="NAME", in_compare=False)
    norms: tuple[Norm, ...] | None = setting(
        None, help="Training norms, e.g. 1,inf", panel=THREAT_MODEL, metavar="NORM,...", default_text="the scheme's", in_compare=False
    )
    eps: dict[Norm, Fraction] = setting(
        factory=dict,
        help="Radius per norm, repeatable: --eps inf=8/255 --eps 1=12 --eps 2=0.5",
        panel=THREAT_MODEL,
        metavar="NORM=RADIUS",
        items=setting_values.eps_items,
        default_text="the data set's radii",
    )
    epochs: int = setting(3, help="Epochs", panel=OPTIMISATION, minimum="positive", compare_help="Epochs per run")
    batch_size: int = setting(128, help="Batch size", panel=OPTIMISATION, minimum="positive")
    lr: float | None = setting(
        None,
        help="Initial learning rate, divided by 10 every --lr-step epochs",
        panel=OPTIMISATION,
        minimum="positive",
        default_text=f"the model's fine-tuning rate, else the data set's recipe, else {DEFAULT_LR}",
    )
    lr_step: float | None = setting(
        None,
        help="Epochs between divisions of the lr by 10",
        panel=OPTIMISATION,
        metavar="EPOCHS",
        minimum="positive",
        default_text="a third of the run",
    )
    lr_schedule: str = setting(
        "step",
        help="step (fine-tuning), piecewise or cyclic (from scratch)",
        panel=OPTIMISATION,
        choices=("step", "piecewise", "cyclic"),
    )
    momentum: float = setting(0.9, help="SGD momentum", panel=OPTIMISATION, minimum="non-negative")
    weight_decay: float = setting(5e-4, help="Weight decay", panel=OPTIMISATION, minimum="non-negative")
    # Training attack per norm (robustft.per_norm): "*" is every norm not named.
    attack: dict[str, str] = setting(
        factory=lambda: {per_norm.ALL: "apgd"},
        help="Training attack family for every norm, or NORM=NAME for one norm; repeatable: --attack inf=fgsm-rs --attack 1=apgd",
        panel=TRAINING_ATTACK,
        metavar="[NORM=]NAME",
        items=setting_values.attack_items,
    )
    attack_steps: dict[str, int] = setting(
        factory=lambda: {per_norm.ALL: 10},
        help="Training attack steps for every norm, or NORM=STEPS for one norm; repeatable: --attack-steps inf=5 --attack-steps 1=15",
        panel=TRAINING_ATTACK,
        metavar="[NORM=]STEPS",
        items=setting_values.attack_steps_items,
    )
    attack_options: dict[str, dict[str, Any]] = setting(  # the attack family's own options
        factory=dict,
        help="An option of the training attack, for every norm or one (1:topk=0.1); repeatable",
        panel=TRAINING_ATTACK,
        flags=("--attack-option",),
        metavar="[NORM:]NAME=VALUE",
        items=setting_values.attack_option_items,
    )
    outer_loss: str = setting("ce", help="ce or trades (TRADES-XENT) at the adversarial points", panel=SCHEME, choices=("ce", "trades"))
    trades_beta: float = setting(6.0, help="TRADES weight beta", panel=SCHEME, minimum="non-negative")
    options: dict[str, str] = setting(  # scheme options
        factory=dict,
        help="Scheme option, repeatable; see 'robustft list schemes --options'",
        panel=SCHEME,
        flags=("--option", "-o"),
        metavar="NAME=VALUE",
        items=setting_values.option_items,
        compare_help="Scheme option for every compared scheme that has it, repeatable",
    )
    seed: int = setting(
        0,
        help="Random seed",
        panel=RUN,
        minimum="non-negative",
        compare_help="First seed (then --seed + 1, ... for --seeds runs per scheme)",
    )
    device: str = setting(
        "auto",
        help="cpu, cuda, cuda:N or auto",
        panel=PERFORMANCE,
        metavar="DEVICE",
        default_text="auto = CUDA when present, else the CPU",
        operational=True,
    )
    out: str | None = setting(
        None, help="Run folder", panel=RUN, metavar="DIR", default_text="runs/<timestamp>-<model>-<scheme>", in_compare=False
    )
    n_train: int | None = setting(
        None, help="Train on the first N training points only (quick experiments)", panel=MODEL_AND_DATA, metavar="N", minimum="positive"
    )
    workers: int | None = setting(
        None,
        help="Data-loading worker processes",
        panel=PERFORMANCE,
        metavar="N",
        minimum="non-negative",
        default_text="0 on the CPU, up to 4 on CUDA",
        operational=True,
    )
    # The GPU path: "auto" / None means on for CUDA, off for the CPU (numerically unchanged).
    amp: str = setting(
        "auto",
        help="Mixed precision: bf16 autocast, fp16 autocast with a gradient scaler, or off",
        panel=PERFORMANCE,
        choices=("auto", "bf16", "fp16", "off"),
        default_text="auto = bf16 on CUDA (fp16 on GPUs without bf16), off on the CPU",
        operational=True,
    )
    attack_precision: str = setting(  # the papers' code attacks in fp32
        "fp32",
        help="Training attacks in fp32 (as the papers' code) or amp (the run's --amp autocast: faster, weaker)",
        panel=TRAINING_ATTACK,
        choices=("fp32", "amp"),
    )
    channels_last: bool | None = setting(
        None, help="Channels-last memory format", panel=PERFORMANCE, default_text="on CUDA only", operational=True
    )
    cudnn_benchmark: bool | None = setting(None, help="cuDNN autotuning", panel=PERFORMANCE, default_text="on CUDA only", operational=True)
    compile: bool = setting(False, help="torch.compile the model for the updates and attacks", panel=PERFORMANCE, operational=True)
    pin_memory: bool | None = setting(
        None,
        help="Page-locked training batches, copied to the GPU asynchronously",
        panel=PERFORMANCE,
        default_text="on CUDA only",
        operational=True,
    )
    checkpoint_every: int = setting(
        0,
        help="Also checkpoint every N batches within an epoch",
        panel=RUN,
        metavar="N",
        minimum="non-negative",
        default_text="0, at epoch ends only",
        operational=True,
    )
    max_nan_batches: int = setting(
        0,
        help="Skip up to N batches with a non-finite loss (no update) before stopping",
        panel=RUN,
        metavar="N",
        minimum="non-negative",
        operational=True,
    )
    # Where models and data come from (passed to the zoo and the data set plugin when set).
    model_dir: str | None = setting(None, help="Folder of downloaded checkpoints (RobustBench layout)", panel=MODEL_AND_DATA, metavar="DIR")
    checkpoint: str | None = setting(
        None, help="Local weights file for the model (timm, torchvision, file zoos)", panel=MODEL_AND_DATA, metavar="FILE"
    )
    arch: str | None = setting(None, help="Architecture of a file:PATH checkpoint", panel=MODEL_AND_DATA, metavar="NAME")
    data_dir: str | None = setting(None, help="Folder holding the data set's files", panel=MODEL_AND_DATA, metavar="DIR")
    image_size: int | None = setting(None, help="Image size for image folders", panel=MODEL_AND_DATA, metavar="PIXELS", minimum="positive")
    extra_data: str | None = setting(
        None, help="Pseudo-labelled extra data mixed half-and-half into each batch", panel=MODEL_AND_DATA, metavar="PATH"
    )
    download: bool | None = setting(None, help="Allow downloading missing weights and data", panel=MODEL_AND_DATA)
    skip_bad_images: bool | None = setting(
        None,
        help="Image folders: leave out files that are not readable images",
        panel=MODEL_AND_DATA,
        flags=("--skip-bad-images",),
        default_text="name them and stop",
    )
    # Not settings: where each setting came from ("default", "recipe cifar10 (...)", "config file ...",
    # "option", ...; written to config.toml as the [provenance] table) and the layers it was built from,
    # so that pre-flight can put the data set's recipe under them (with_recipe).
    provenance: dict[str, str] = field(default_factory=dict, compare=False)
    layers: tuple[tuple[str, Mapping[str, Any]], ...] = field(default=(), compare=False, repr=False)

    def model_options(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("model_dir", self.model_dir), ("checkpoint", self.checkpoint), ("arch", self.arch), ("download", self.download))
            if v is not None
        }

    def data_options(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (
                ("data_dir", self.data_dir),
                ("image_size", self.image_size),
                ("extra_data", self.extra_data),
                ("download", self.download),
                ("skip_bad_images", self.skip_bad_images),
            )
            if v is not None
        }

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


#: Each setting's description, by field name (the fields without one, NOT_SETTINGS, are records, not settings).
SETTINGS: dict[str, Setting] = {f.name: f.metadata[SETTING] for f in dataclasses.fields(FinetuneConfig) if SETTING in f.metadata}
#: FinetuneConfig fields that are not settings (never read from a file or an option).
NOT_SETTINGS = frozenset(f.name for f in dataclasses.fields(FinetuneConfig)) - set(SETTINGS)
#: Settings that change how a run is carried out, not what it computes: ``--resume`` accepts new values.
OPERATIONAL_FIELDS = frozenset(name for name, s in SETTINGS.items() if s.operational)
#: Settings kept per norm (robustft.per_norm).
PER_NORM_FIELDS = frozenset({"attack", "attack_steps", "attack_options"})


@functools.cache
def scalar_types() -> dict[str, type]:
    """The settings whose value is one bool, int, float or str (optional or not), from the field annotations."""
    kinds: dict[str, type] = {}
    for name, hint in typing.get_type_hints(FinetuneConfig).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
        if name in SETTINGS and len(args) == 1 and args[0] in (bool, int, float, str):
            kinds[name] = args[0]
    return kinds


def option_flags(name: str) -> tuple[str, ...]:
    """The command-line spellings of setting ``name``: its own, else --name (--name/--no-name for a switch)."""
    described = SETTINGS[name]
    if described.flags:
        return described.flags
    dashed = name.replace("_", "-")
    return (f"--{dashed}/--no-{dashed}",) if scalar_types().get(name) is bool else (f"--{dashed}",)


def from_command_line(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (None or no items: not given) as setting values; the items of a
    repeatable option are parsed (``attack_steps=["inf=5", "1=15"]`` gives ``{"inf": 5, "1": 15}``)."""
    parsed: dict[str, Any] = {}
    for name, value in values.items():
        items = SETTINGS[name].items
        if value is None or (items is not None and not value):
            continue
        parsed[name] = items(list(value), option_flags(name)[0].split("/")[0]) if items is not None else value
    return parsed


def _convert(name: str, value: Any, source: str) -> Any:
    # Settings with values of their own shape first, then the scalars by their annotated type.
    if name == "attack":
        return per_norm.normalise(value, f"{source}: 'attack'", setting_values.attack_name)
    if name == "attack_steps":
        return per_norm.normalise(value, f"{source}: 'attack_steps'", setting_values.attack_steps)
    if name == "attack_options":
        return convert_attack_options(value)
    if name == "norms":
        if not isinstance(value, (str, list, tuple)):
            raise BadInputError(f'{source}: \'norms\' must be a list such as ["1", "inf"] or a string such as "1,inf".')
        if isinstance(value, (list, tuple)) and not value:
            return ()  # a scheme without norms (clean) records []; the scheme checks how many it needs
        return parse_norms(value if isinstance(value, str) else [str(v) for v in value])
    if name == "eps":
        if not isinstance(value, Mapping):
            raise BadInputError(f"{source}: 'eps' must be a table such as {{inf = \"8/255\", 1 = 12}}.")
        return normalise_eps({str(k): (str(v) if not isinstance(v, str) else v) for k, v in value.items()})
    if name == "options":
        if not isinstance(value, Mapping):
            raise BadInputError(f"{source}: 'options' must be a table of scheme options.")
        return {str(k): str(v) if not isinstance(v, bool) else str(v).lower() for k, v in value.items()}
    kind = scalar_types().get(name, str)
    if kind is bool:
        if not isinstance(value, bool):
            raise BadInputError(f"{source}: {name!r} must be true or false, got {value!r}.")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInputError(f"{source}: {name!r} must be an integer, got {value!r}.")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BadInputError(f"{source}: {name!r} must be a number, got {value!r}.")
        value = float(value)
    elif not isinstance(value, str):
        raise BadInputError(f"{source}: {name!r} must be a string, got {value!r}.")
    described = SETTINGS[name]
    if described.choices and value not in described.choices:
        raise BadInputError(f"{source}: {name!r} must be one of {', '.join(described.choices)}, got {value!r}.")
    if described.minimum == "positive" and value <= 0:
        raise BadInputError(f"{source}: {name!r} must be positive, got {value!r}.")
    if described.minimum == "non-negative" and value < 0:
        raise BadInputError(f"{source}: {name!r} must not be negative, got {value!r}.")
    if name == "seed" and value >= MAX_SEED:
        raise BadInputError(f"{source}: 'seed' must be below 2**62, got {value}.")
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
