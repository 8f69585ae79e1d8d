"""RAMP: robustness against multiple perturbations (Jiang & Singh, "RAMP: Boosting adversarial robustness
against multiple lp perturbations", Sec. 4).

**Loss (Eq. 1-3, Alg. 1).** For the key trade-off pair ``(q, r)`` (default ``(l-inf, l1)``) every batch is
attacked in both norms, giving ``x'_q`` and ``x'_r``. With ``L`` the run's outer loss per point (``--outer-loss``:
cross-entropy, or TRADES) and ``p_q = softmax f(x'_q)``, ``p_r = softmax f(x'_r)``:

    L_max  = (1/N) sum_i max(L(x'_q,i), L(x'_r,i))                           (Eq. 2, MAX over the pair)
    L_pair = (1/n_c) sum_{i in gamma} KL(p_q,i || p_r,i)                      (Eq. 1)
    L      = L_max + lambda * L_pair                                         (Eq. 3)

where ``gamma`` holds the ``n_c`` points whose ``q``-adversarial example the model still classifies correctly
(Alg. 1 line 6); ``L_pair`` is 0 when ``gamma`` is empty. ``KL(p_q || p_r) = sum_k p_q log(p_q / p_r)`` as in
Eq. 1: it pulls the ``r`` prediction towards the ``q`` prediction on the points still robust in ``q``; both
sides keep their gradient, as the formula is written. ``pairing=mse`` and ``pairing=cosine`` replace the KL by
the appendix B.3 losses ``1/2 ||p_q - p_r||^2`` (Eq. 10) and ``1 - cos(p_q, p_r)`` (Eq. 11). ``lambda`` is 1.5
for fine-tuning (the default) and 5 for training from scratch (Sec. 5.1).

**Gradient projection (Eq. 4-7, Alg. 2, Sec. 4.4), ``gp=on``.** From the weights ``w`` at the start of an
epoch, the adversarial epoch (the loss above, through the engine's optimizer) and a natural epoch (cross-
entropy on clean batches, on a copy of the model with its own optimizer and the same learning-rate schedule)
both run on the same batches. Then per layer ``l`` (every non-scalar floating tensor of the state dict,
BatchNorm running statistics included), with ``g_a = w_adv - w``, ``g_n = w_nat - w`` and
``c = cos(g_n, g_a)`` (Eq. 4):

    GP(g_n, g_a) = c * g_n if c > 0 else 0                                   (Eq. 5, 6)
    w_new        = w + (1 - beta) * GP(g_n, g_a) + beta * g_a                (Eq. 7)

The authors' reference code weights the two terms the other way round (``beta`` on the projected natural
update); the two agree at the default ``beta = 0.5``, and ``beta = b`` there is ``beta = 1 - b`` here. Integer
buffers (BatchNorm's ``num_batches_tracked``) and 0-d tensors take the adversarial model's value. As in
Alg. 2 line 3 the natural copy restarts from ``w_new`` (that is, ``f^(r)``) every epoch; its optimizer (and
its momentum) is kept across epochs. The engine's optimizer belongs to the adversarial model and is left
untouched. Gradient projection is off by default: the paper's fine-tuning algorithm is Alg. 1 and its
``beta`` and the ``beta`` ablation (Fig. 4c) belong to training from scratch, which is also how the authors'
scripts run; train from scratch with ``--option gp=on --option lambda=5``.

**Key trade-off pair (Sec. 4.1).** ``pair=q,r`` fixes it (both norms must be training norms, ``--norms``).
The paper picks the two norms in which the matching lp-AT models are least robust against their own attack.
With one base model at hand, ``pair=auto`` measures the base model's robust training error per training norm
with the run's training attack on the first ``auto-batches`` training batches (which are then trained on as
usual) and takes the two norms with the highest error; of those, ``q`` is the one with the lower error (the
robustness to preserve, as ``q = l-inf`` for an l-inf-robust model) and ``r`` the other. Ties go to the order
l-inf, l2, l1. For the usual CIFAR-10 radii this gives ``(inf, 1)`` for l-inf-, l1- and l2-robust models
alike, as Table 6 of the paper uses.

Cost: two attacks per batch, about twice single-norm AT; gradient projection adds one clean forward and
backward pass per image.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robustft.plugin import DISPLAY_ORDER, BadInputError, Norm, Scheme, SchemeOptions, TrainContext, hookimpl, option

log = logging.getLogger("robustft")

PAIRINGS = ("kl", "mse", "cosine")

# --------------------------------------------------------------------------------------- pure pieces


def pairing_loss(kind: str, logits_q: Tensor, logits_r: Tensor, mask: Tensor) -> Tensor:
    """The logit-pairing loss over the points selected by ``mask`` (RAMP Eq. 1, 10, 11); 0 without any.

    ``kl``: ``KL(p_q || p_r) = sum_k p_q (log p_q - log p_r)``; ``mse``: ``1/2 ||p_q - p_r||^2``; ``cosine``:
    ``1 - cos(p_q, p_r)``; each averaged over the selected points.
    """
    if kind not in PAIRINGS:
        raise BadInputError(f"Unknown pairing loss {kind!r}: choose one of {', '.join(PAIRINGS)}.")
    # Every point is computed and the mask weights the mean: no boolean indexing, whose output size
    # the host would have to wait for.
    log_p_q = F.log_softmax(logits_q, dim=1)
    log_p_r = F.log_softmax(logits_r, dim=1)
    p_q, p_r = log_p_q.exp(), log_p_r.exp()
    if kind == "kl":
        per_point = (p_q * (log_p_q - log_p_r)).sum(dim=1)
    elif kind == "mse":
        per_point = 0.5 * (p_q - p_r).pow(2).sum(dim=1)
    else:
        per_point = 1.0 - F.cosine_similarity(p_q, p_r, dim=1)
    selected = torch.where(mask, per_point, torch.zeros_like(per_point))
    return selected.sum() / mask.sum().clamp_min(1)


def max_over_pair(loss_q: Tensor, loss_r: Tensor) -> tuple[Tensor, Tensor]:
    """Per point the larger of the two losses (RAMP Eq. 2), and where ``r`` gave it (ties go to ``q``)."""
    from_r = loss_r > loss_q
    return torch.where(from_r, loss_r, loss_q), from_r


def update_cosine(d_a: Tensor, d_n: Tensor) -> float:
    """``cos(g_n, g_a)`` of one layer (RAMP Eq. 4), in float64; 0 when either update is zero."""
    a, n = d_a.detach().flatten().double(), d_n.detach().flatten().double()
    denom = float(a.norm() * n.norm())
    return float(a @ n) / denom if denom > 0 else 0.0


def projects(tensor: Tensor) -> bool:
    """Whether gradient projection treats this state-dict entry as a layer: non-scalar floating tensors."""
    return torch.is_floating_point(tensor) and tensor.dim() > 0


def gradient_projection(
    start: Mapping[str, Tensor], adversarial: Mapping[str, Tensor], natural: Mapping[str, Tensor], beta: float
) -> tuple[dict[str, Tensor], dict[str, float]]:
    """Combine an adversarial and a natural epoch that both started from ``start`` (RAMP Eq. 4-7).

    Returns the new state dict and the cosine of every projected layer. Entries that are not projected
    (integer buffers such as ``num_batches_tracked``, 0-d tensors) take the adversarial value.
    """
    new: dict[str, Tensor] = {}
    cosines: dict[str, float] = {}
    for key, w in start.items():
        w_adv = adversarial[key]
        if not projects(w):
            new[key] = w_adv.detach().clone()
            continue
        d_a = w_adv.detach() - w
        d_n = natural[key].detach() - w
        c = update_cosine(d_a, d_n)
        cosines[key] = c
        update = beta * d_a
        if c > 0:  # Eq. 5: a natural update pointing away from the adversarial one is dropped
            update = update + (1.0 - beta) * c * d_n
        new[key] = w + update
    return new, cosines


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the model's state dict (parameters and buffers)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@contextmanager
def capture_logits(model: nn.Module, inputs: Sequence[Tensor]) -> Iterator[dict[int, Tensor]]:
    """Record the model's output for each tensor in ``inputs`` while the block runs.

    RAMP needs the logits at ``x'_q`` and ``x'_r`` for the pairing loss; the run's outer loss computes them
    anyway (whatever it is: cross-entropy or TRADES), so a forward hook keeps them instead of running the
    model again (which would also move BatchNorm statistics a second time). Keys are positions in ``inputs``.
    """
    seen: dict[int, Tensor] = {}

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if args and isinstance(output, Tensor):
            for i, candidate in enumerate(inputs):
                if args[0] is candidate and i not in seen:
                    seen[i] = output

    handle = model.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


# ------------------------------------------------------------------------------------------- options


def _parse_pair(text: str) -> str:
    """``auto``, or two distinct norms ``q,r`` (q first) written canonically (``linf, L1`` is ``inf,1``)."""
    if text.strip().lower() == "auto":
        return "auto"
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        norms = [Norm.parse(p) for p in parts]  # in the order given: q first
    except BadInputError:
        raise ValueError(text) from None
    if len(norms) != 2 or norms[0] == norms[1]:
        raise ValueError(text)
    return _format_pair(norms)


def _format_pair(pair: Sequence[Norm]) -> str:
    return ",".join(n.value for n in pair)


# -------------------------------------------------------------------------------------------- scheme


class RAMP(Scheme):
    name = "ramp"
    description = "MAX over the key pair plus logit pairing (Eq. 1-3), optional gradient projection (Eq. 4-7)"
    default_norms = (Norm.LINF, Norm.L2, Norm.L1)
    min_norms = 2

    class Options(SchemeOptions):
        pair: str = option("inf,1", parse=_parse_pair, help="the key trade-off pair q,r of two distinct training norms (q first), or auto")
        pairing: str = option("kl", choices=PAIRINGS, help="the logit-pairing loss: kl (Eq. 1), mse (Eq. 10) or cosine (Eq. 11)")
        lam: float = option(1.5, range="[0, inf)", cli_name="lambda", help="weight of the pairing loss (1.5 fine-tuning, 5 from scratch)")
        gp: bool = option(False, help="gradient projection once per epoch (Alg. 2)")
        beta: float = option(0.5, range=(0, 1), help="weight of the adversarial update in Eq. 7")
        auto_batches: int = option(4, range="[1, inf)", help="training batches pair=auto measures robust errors on")

    options: Options

    def __init__(self, norms: Sequence[Norm], **options: Any) -> None:
        super().__init__(norms, **options)
        self.key_pair: tuple[Norm, Norm] | None = None
        if self.options.pair != "auto":
            q, r = (Norm.parse(p) for p in self.options.pair.split(","))
            missing = [n for n in (q, r) if n not in self.norms]
            if missing:
                raise BadInputError(
                    f"RAMP's pair {self.options.pair} needs l{missing[0].value} among the training norms "
                    f"(--norms {_format_pair(self.norms)}): add it with --norms."
                )
            self.key_pair = (q, r)
        self.probe_errors: dict[Norm, float] = {}
        self.clean_model: nn.Module | None = None
        self.clean_update: nn.Module | None = None  # clean_model, or its DDP wrapper under torchrun
        self.clean_optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: Mapping[str, Any] | None = None
        self._reset_epoch_stats()
        self.gp_cosines: dict[str, float] = {}

    # ------------------------------------------------------------------------------------ the loss

    def _reset_epoch_stats(self) -> None:
        self.points = 0
        self.success = {"q": 0.0, "r": 0.0}
        self.qualifying = 0
        self.from_r = 0

    def _outer_with_logits(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, Tensor]:
        """The run's per-point outer loss at ``x_adv`` and the logits at ``x_adv`` the loss computed."""
        with capture_logits(model, [x_adv]) as seen:
            loss = ctx.adversarial_loss(model, x, x_adv, y)
        if 0 in seen:
            return loss, seen[0]
        ctx.count_passes(forward=1, images=x.shape[0])  # an outer loss that never looked at x_adv itself
        return loss, model(x_adv)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, Any]]:
        if self.key_pair is None:  # pair=auto called outside run_epoch (a custom loop): decide on this batch
            self.key_pair = self.choose_pair(ctx, [(x, y)])
        q, r = self.key_pair
        attack_q = ctx.attack(q, x, y)
        attack_r = ctx.attack(r, x, y)
        loss_q, logits_q = self._outer_with_logits(model, x, attack_q.x_adv, y, ctx)
        loss_r, logits_r = self._outer_with_logits(model, x, attack_r.x_adv, y, ctx)
        ctx.count_passes(forward=1, backward=1, images=x.shape[0])  # the engine counts one of the two outer losses
        worst, from_r = max_over_pair(loss_q, loss_r)
        loss_max = worst.mean()
        gamma = logits_q.detach().argmax(dim=1) == y  # Alg. 1 line 6: still correct at x'_q
        loss_pair = pairing_loss(self.options.pairing, logits_q, logits_r, gamma)
        # Statistics over every process of a distributed run (one reduction per batch).
        # The logged losses are weighted by their point counts, so that the sums give the global means.
        n, broken_q, broken_r, qualifying, worst_r, loss_max_sum, loss_pair_sum = ctx.global_sums(
            x.shape[0],
            attack_q.success.sum(),
            attack_r.success.sum(),
            gamma.sum(),
            from_r.sum(),
            loss_max.detach() * x.shape[0],
            loss_pair.detach() * gamma.sum(),
        )
        self.points += int(n)
        self.success["q"] += broken_q
        self.success["r"] += broken_r
        self.qualifying += int(qualifying)
        self.from_r += int(worst_r)
        logs: dict[str, Any] = {
            "pair": _format_pair(self.key_pair),
            "loss_max": loss_max_sum / n,
            "loss_pair": loss_pair_sum / qualifying if qualifying else 0.0,
            "qualifying": qualifying / n,
            f"rerr_{q.value}": self.success["q"] / self.points,
            f"rerr_{r.value}": self.success["r"] / self.points,
        }
        return loss_max + self.options.lam * loss_pair, logs

    # ------------------------------------------------------------------------- the key pair (auto)

    def choose_pair(self, ctx: TrainContext, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[Norm, Norm]:
        """``pair=auto``: the two training norms with the highest robust training error of the current model.

        Of the two, ``q`` (listed first) is the norm with the lower error; ties follow l-inf, l2, l1.
        """
        local = torch.zeros(len(self.norms) + 1, dtype=torch.float64)  # errors per norm, then the count
        for x, y in batches:
            x, y = x.to(ctx.device), y.to(ctx.device)
            for i, norm in enumerate(self.norms):
                local[i] += float(ctx.attack(norm, x, y).success.float().sum())
            local[-1] += x.shape[0]
        *errors, count = ctx.reduce_sum(local).tolist()  # every process picks the same pair
        self.probe_errors = {n: e / max(count, 1.0) for n, e in zip(self.norms, errors)}
        order = {n: i for i, n in enumerate(DISPLAY_ORDER)}
        weakest = sorted(self.norms, key=lambda n: (-self.probe_errors[n], order[n]))[:2]
        q, r = sorted(weakest, key=lambda n: (self.probe_errors[n], order[n]))
        return q, r

    def _auto_pair(self, ctx: TrainContext, batches: Iterable[tuple[Tensor, Tensor]]) -> Iterable[tuple[Tensor, Tensor]]:
        """Decide the pair on the first batches of the epoch and hand the same batches back for training."""
        iterator = iter(batches)
        head = list(itertools.islice(iterator, self.options.auto_batches))
        self.key_pair = self.choose_pair(ctx, head)
        shown = ", ".join(f"{n.label} {100 * e:.1f}%" for n, e in self.probe_errors.items())
        log.info(
            "RAMP pair=auto: robust training error of the model on %d batch(es): %s; key pair q=%s, r=%s.",
            len(head),
            shown,
            self.key_pair[0].label,
            self.key_pair[1].label,
        )
        return itertools.chain(head, iterator)

    # --------------------------------------------------------------------- gradient projection

    def _natural_copy(self, ctx: TrainContext, start: Mapping[str, Tensor]) -> tuple[nn.Module, torch.optim.Optimizer]:
        """The natural-training copy, reset to ``start`` (Alg. 2 line 3); its optimizer persists."""
        if self.clean_model is None:
            self.clean_model = copy.deepcopy(ctx.model)
            # Under torchrun the natural epoch averages its gradients over the processes too (DDP).
            self.clean_update = ctx.distribute(self.clean_model)
            self.clean_optimizer = ctx.make_optimizer(self.clean_model)
            if self._pending_optimizer_state is not None:
                self.clean_optimizer.load_state_dict(self._pending_optimizer_state)
                self._pending_optimizer_state = None
        self.clean_model.load_state_dict(start)
        assert self.clean_optimizer is not None
        return self.clean_model, self.clean_optimizer

    def _natural_step(self, ctx: TrainContext, model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, lr: float) -> None:
        x, y = x.to(ctx.device), y.to(ctx.device)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        with ctx.update_autocast():  # bf16 runs only: fp16 would need a gradient scaler of its own
            loss = ctx.global_mean_loss(F.cross_entropy(model(x), y), x.shape[0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ctx.count_passes(forward=1, backward=1, images=x.shape[0])

    def run_epoch(self, ctx: TrainContext, batches: Iterable[tuple[Tensor, Tensor]], step: Callable[[Tensor, Tensor], None]) -> None:
        """Alg. 1 per batch through ``step``; with ``gp=on`` Alg. 2 around it (natural epoch on a copy, Eq. 7)."""
        if self.key_pair is None:
            batches = self._auto_pair(ctx, batches)
        if not self.options.gp:
            for x, y in batches:
                step(x, y)
            return
        start = snapshot(ctx.model)
        natural, optimizer = self._natural_copy(ctx, start)
        for i, (x, y) in enumerate(batches):
            # Both epochs see the same batches at the same point of the schedule.
            lr = ctx.lr_at(ctx.epoch + i / ctx.batches_per_epoch)
            self._natural_step(ctx, self.clean_update, optimizer, x, y, lr)
            step(x, y)
        new, self.gp_cosines = gradient_projection(start, snapshot(ctx.model), snapshot(natural), self.options.beta)
        ctx.model.load_state_dict(new)  # copies in place: the engine's optimizer keeps its parameters

    # ------------------------------------------------------------------------------ epoch hooks

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self._reset_epoch_stats()
        self.gp_cosines = {}

    def on_epoch_end(self, ctx: TrainContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.key_pair is not None:
            q, r = self.key_pair
            points = max(self.points, 1)
            out.update(
                pair=_format_pair(self.key_pair),
                rerr={q.value: self.success["q"] / points, r.value: self.success["r"] / points},
                qualifying=self.qualifying / points,
                max_from_r=self.from_r / points,
            )
        if self.probe_errors:
            out["auto_pair_errors"] = {n.value: e for n, e in self.probe_errors.items()}
        if self.gp_cosines:
            values = list(self.gp_cosines.values())
            out["gp"] = {
                "layers": len(values),
                "kept": sum(c > 0 for c in values),
                "mean_cosine": sum(values) / len(values),
            }
        return out

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"pair": list(n.value for n in self.key_pair) if self.key_pair else None}
        if self.probe_errors:
            state["probe_errors"] = {n.value: e for n, e in self.probe_errors.items()}
        if self.clean_optimizer is not None:
            state["clean_optimizer"] = self.clean_optimizer.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("pair"):
            self.key_pair = (Norm.parse(state["pair"][0]), Norm.parse(state["pair"][1]))
        self.probe_errors = {Norm.parse(k): float(v) for k, v in state.get("probe_errors", {}).items()}
        if "clean_optimizer" in state:
            if self.clean_optimizer is not None:
                self.clean_optimizer.load_state_dict(state["clean_optimizer"])
            else:
                self._pending_optimizer_state = state["clean_optimizer"]


@hookimpl
def register_schemes(register) -> None:
    register(RAMP)
