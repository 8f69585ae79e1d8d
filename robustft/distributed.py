"""``torch.distributed`` for runs launched by ``torchrun``: one process per device, any number of machines.

``torchrun`` starts the processes and tells each its place through environment variables (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); :func:`init_from_env` joins the process
group through the ``env://`` rendezvous, with the gloo backend on CPU and nccl on CUDA. Without
``WORLD_SIZE`` (a plain ``robustft ...``) every helper here is the single-process identity, so library
code calls them unconditionally: ``is_main()`` is True, ``all_reduce_sum(t)`` returns ``t``, and so on.

Training pieces (for the engine): :func:`wrap_model` (DistributedDataParallel), :func:`unwrap` (the
plain module, which attacks use: they differentiate with respect to the input only and must not touch
DDP's gradient buckets), and :class:`ShardedBatchSampler` / :func:`make_distributed_loader`, which deal
each rank its slice of exactly the global batches a single process would draw, so ``--batch-size`` is
the global batch size and the learning-rate schedule (set per global batch) is unchanged.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from robustft.errors import BadInputError, UserError

if TYPE_CHECKING:
    from robustft.config import FinetuneConfig
    from robustft.contracts import DatasetPlugin

log = logging.getLogger("robustft")

T = TypeVar("T")

__all__ = [
    "ShardedBatchSampler",
    "all_reduce_sum",
    "RankSlices",
    "barrier",
    "broadcast_buffers",
    "broadcast_object",
    "gather_object",
    "gather_tensor",
    "init_from_env",
    "is_distributed",
    "is_main",
    "local_device",
    "local_module",
    "local_rank",
    "make_distributed_loader",
    "rank",
    "seed_worker",
    "shard_round_robin",
    "shutdown",
    "unwrap",
    "world_size",
    "wrap_model",
]

#: Whether this module created the process group (and therefore destroys it in :func:`shutdown`).
_owned = False


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadInputError(f"Environment variable {name}={value!r} must be an integer (torchrun sets it).") from None


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without a group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without torchrun): it picks the GPU."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on the one process that writes logs, progress, tables and checkpoints (rank 0)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``device`` pinned to this process's GPU under torchrun (``cuda`` -> ``cuda:LOCAL_RANK``)."""
    if device.type != "cuda" or _env_int("WORLD_SIZE", 1) <= 1:
        return device
    index = local_rank()
    if index >= torch.cuda.device_count():
        raise UserError(
            f"Process with LOCAL_RANK {index} has no GPU of its own: this machine has {torch.cuda.device_count()}; "
            "lower torchrun's --nproc_per_node."
        )
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_from_env(device: torch.device | None = None, *, timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's environment; return whether one is active.

    A no-op returning False without ``WORLD_SIZE`` (or with ``WORLD_SIZE=1``), and idempotent. The
    backend is nccl when ``device`` is CUDA, gloo otherwise; the rendezvous is ``env://`` (``MASTER_ADDR``
    and ``MASTER_PORT``, which torchrun's c10d rendezvous fills in on every machine).
    """
    global _owned
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return False
    if not dist.is_available():
        raise UserError("WORLD_SIZE is set but this torch build has no torch.distributed support.")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise BadInputError(f"WORLD_SIZE is set but {name} is not: start distributed runs with torchrun.")
    cuda = device is not None and device.type == "cuda"
    backend = "nccl" if cuda else "gloo"
    kwargs: dict[str, Any] = {}
    if cuda:
        kwargs["device_id"] = local_device(device)  # binds nccl to this process's GPU up front
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        world_size=size,
        rank=_env_int("RANK", 0),
        timeout=_dt.timedelta(seconds=timeout_s),
        **kwargs,
    )
    _owned = True
    atexit.register(shutdown)
    if is_main():
        log.info("Joined a process group of %d processes (%s backend).", size, backend)
    return True


def shutdown() -> None:
    """Leave the process group this module created (safe to call twice, or without one)."""
    global _owned
    if _owned and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if is_distributed():
        dist.barrier()


def _backend_device(reference: Tensor) -> torch.device:
    # nccl moves CUDA tensors only; gloo moves CPU tensors (and CUDA ones through the host).
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else reference.device


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """The element-wise sum of ``tensor`` over all processes, on every process (a new tensor).

    Booleans are summed as integers (so a per-point mask becomes a count); the result keeps the input's
    device and, for non-boolean tensors, its dtype.
    """
    if not is_distributed():
        return tensor.clone()
    work = tensor.to(torch.int64) if tensor.dtype == torch.bool else tensor.clone()
    moved = work.to(_backend_device(work))
    dist.all_reduce(moved, op=dist.ReduceOp.SUM)
    return moved.to(tensor.device)


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as process ``src`` has it, on every process (picklable objects: a run folder, a config)."""
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def gather_tensor(tensor: Tensor, dst: int | None = 0) -> Tensor | None:
    """Concatenate (along dim 0) every process's ``tensor``, in rank order; lengths may differ per rank.

    The other dimensions and the dtype must agree. With ``dst`` a rank, only that rank receives the
    result and the others get None; with ``dst=None`` every rank receives it (``all_gather``). In one
    process the result is ``tensor`` itself. Lengths travel first, then every piece is padded to the
    longest so that the collective sees equal shapes.
    """
    if not is_distributed():
        return tensor
    device = _backend_device(tensor)
    local = tensor.to(device)
    length = torch.tensor([local.shape[0]], device=device, dtype=torch.int64)
    lengths = [torch.zeros_like(length) for _ in range(world_size())]
    dist.all_gather(lengths, length)
    sizes = [int(n) for n in lengths]  # once per gather, outside any loop: the host needs the sizes
    longest = max(sizes)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=device)
    padded[: local.shape[0]] = local
    pieces = [torch.empty_like(padded) for _ in range(world_size())]
    # gloo has no gather for every dtype; all_gather works everywhere, then the non-destination drops it.
    dist.all_gather(pieces, padded)
    if dst is not None and rank() != dst:
        return None
    return torch.cat([p[:n] for p, n in zip(pieces, sizes)]).to(tensor.device)


def gather_object(obj: T) -> list[T]:
    """Every process's ``obj`` in rank order, on every process (``[obj]`` in one process).

    For small picklable things gathered once in a while (the RNG states of a checkpoint), not per step.
    """
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


# ------------------------------------------------------------------------------------------- training


def wrap_model(model: nn.Module, device: torch.device, **ddp_options: Any) -> nn.Module:
    """``model`` in DistributedDataParallel on ``device`` inside a process group, else ``model`` itself.

    DDP averages the gradients over the processes, so with equal per-process batches the update is the
    one of the global batch's mean loss (:func:`mean_loss_scale` for unequal ones). Use :func:`unwrap`
    for attacks and state dicts.
    """
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **ddp_options)


def mean_loss_scale(n_local: int, n_global: int) -> float:
    """The factor for this rank's mean loss that makes DDP's update the global batch's mean-loss update.

    DDP averages the ranks' gradients, ``(1/W) sum_r grad mean_r``; the single-process update is
    ``grad (1/N) sum_i loss_i = sum_r (n_r/N) grad mean_r``. Scaling rank ``r``'s mean loss by
    ``W n_r / N`` makes the two equal when the pieces of a global batch differ in size (a global batch
    not divisible by the number of processes); it is exactly 1.0 when they are equal.
    """
    return world_size() * n_local / n_global


def scale_to_global_mean(loss: Tensor, n_local: int, n_global: int) -> Tensor:
    """``loss`` (this rank's mean over ``n_local`` points) times :func:`mean_loss_scale`; ``loss`` itself
    when the factor is 1 (one process, or equal slices), so those runs compute exactly what they did."""
    scale = mean_loss_scale(n_local, n_global)
    return loss if scale == 1.0 else loss * scale


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm's running statistics) into every rank's ``module``, in place.

    One broadcast per dtype. The engine calls it before each training step, so that the attacks, which
    run in eval mode on the unwrapped model, use the same statistics on every rank (DDP's own buffer
    broadcast happens only inside its forward pass, after the attacks).
    """
    if not is_distributed():
        return
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for buffer in module.buffers():
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    with torch.no_grad():
        for buffers in by_dtype.values():
            flat = torch.cat([b.detach().reshape(-1) for b in buffers]).to(_backend_device(buffers[0]))
            dist.broadcast(flat, src=src)
            offset = 0
            for b in buffers:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()


def local_module(model: nn.Module) -> nn.Module:
    """``model`` without its DistributedDataParallel wrapper (a ``torch.compile`` wrapper stays)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP (or ``torch.compile``) wrapper; ``model`` itself otherwise."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner) if isinstance(inner, nn.parallel.DistributedDataParallel) else inner
    return getattr(inner, "_orig_mod", inner)


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's slice of each global batch of a single-process shuffled loader.

    Every epoch draws ``torch.randperm(n, generator=generator)``, exactly what a DataLoader with
    ``shuffle=True`` and the same generator draws, cuts it into global batches of ``batch_size`` and
    yields the ``rank``-th of ``world`` near-equal contiguous pieces of each. The union over ranks of
    step ``b``'s batches is therefore the single-process batch ``b``; every rank takes the same number
    of steps (DDP needs that). A last global batch with fewer points than ranks is dropped, since some
    rank would get none.
    """

    def __init__(self, n: int, batch_size: int, *, rank: int, world: int, generator: torch.Generator) -> None:
        if batch_size < world:
            raise BadInputError(f"--batch-size {batch_size} is the global batch: it must be at least the {world} processes.")
        self.n, self.batch_size, self.rank, self.world, self.generator = n, batch_size, rank, world, generator

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest >= self.world else 0)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n, generator=self.generator)
        batches = [b for b in order.split(self.batch_size) if b.numel() >= self.world]
        # RandomSampler draws a second permutation at the end of every epoch (it slices it to nothing);
        # drawing it too keeps the next epoch's order equal to the single-process one.
        torch.randperm(self.n, generator=self.generator)
        for batch in batches:
            yield batch.tensor_split(self.world)[self.rank].tolist()


class RankSlices(torch.utils.data.Sampler[list[int]]):
    """This rank's slice of each global batch of another batch sampler (the half-real, half-extra one, say).

    ``batches`` must yield the same batches on every rank (its generator seeded identically); each is cut
    into ``world`` near-equal contiguous pieces and the ``rank``-th is yielded. A global batch with fewer
    points than ranks is skipped on every rank; ``last_batch_size`` (the size of ``batches``' final batch)
    lets :meth:`__len__` count it out without drawing anything.
    """

    def __init__(self, batches: torch.utils.data.Sampler[list[int]], *, rank: int, world: int, last_batch_size: int) -> None:
        self.batches, self.rank, self.world, self.last_batch_size = batches, rank, world, last_batch_size

    def __len__(self) -> int:
        return len(self.batches) - (1 if 0 < self.last_batch_size < self.world else 0)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) >= self.world:
                yield torch.tensor(batch).tensor_split(self.world)[self.rank].tolist()


def seed_worker(rank: int, worker_id: int) -> None:
    """``worker_init_fn`` of rank ``rank``'s loader: offset the worker's seeds so ranks augment independently.

    Every rank shares the loader generator (it must, to draw the same global batches), so without this
    the workers of all ranks would draw the same crops and flips. Rank 0 keeps the single-process seeds.
    """
    if rank:
        import random

        seed = (torch.initial_seed() + 1_000_003 * rank) % 2**63
        torch.manual_seed(seed)
        random.seed(seed)


def make_distributed_loader(
    dataset: DatasetPlugin, config: FinetuneConfig, generator: torch.Generator, device: torch.device
) -> torch.utils.data.DataLoader:
    """The training loader of :func:`robustft.data.make_train_loader`, sharded over the process group.

    ``config.batch_size`` stays the global batch size; each rank loads about ``batch_size / world``
    points per step. ``generator`` must be seeded identically on every rank (the engine seeds it with
    ``config.seed``). In one process this is exactly :func:`robustft.data.make_train_loader`.
    """
    from robustft.data import make_train_loader

    return make_train_loader(dataset, config, generator, device, rank=rank(), world=world_size())


def shard_round_robin(items: Sequence[T]) -> list[T]:
    """This rank's items when ``items`` are dealt like cards: ``items[rank], items[rank + world], ...``."""
    return list(items[rank() :: world_size()])
