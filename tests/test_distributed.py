"""torch.distributed helpers and distributed evaluation, with 2 CPU processes on the gloo backend.

Run as a script under torchrun (``python -m torch.distributed.run --standalone --nproc_per_node 2
tests/test_distributed.py OUT.json``) this file is also the worker of the collective tests: every rank
exercises the helpers and rank 0 writes what it saw to ``OUT.json``. With ``finetune OUT_DIR`` every rank
fine-tunes (the 2-process training test) and records the norms E-AT drew on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustft import distributed

HERE = Path(__file__).resolve()
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _tiny_net() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))


def _tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(21, 12, generator=g), torch.randint(0, 3, (21,), generator=g)


def _train(model: nn.Module, loader: torch.utils.data.DataLoader, epochs: int) -> nn.Module:
    """SGD as the engine runs it under torchrun: each rank's mean loss scaled by ``mean_loss_scale``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            n_global = int(distributed.all_reduce_sum(torch.tensor([x.shape[0]]))[0])
            (F.cross_entropy(model(x), y) * distributed.mean_loss_scale(x.shape[0], n_global)).backward()
            opt.step()
    return model


def _worker(out: str) -> None:
    """Every rank runs this under torchrun; rank 0 records the results."""
    assert distributed.init_from_env(torch.device("cpu"))
    r, world = distributed.rank(), distributed.world_size()
    summed = distributed.all_reduce_sum(torch.tensor([1.0, float(r)]))
    mask = distributed.all_reduce_sum(torch.tensor([r == 0, r == 1, False]))
    piece = torch.arange(r + 2, dtype=torch.float32)[:, None].repeat(1, 2) + 10 * r  # rank r: r + 2 rows
    gathered = distributed.gather_tensor(piece)
    everywhere = distributed.gather_tensor(piece, dst=None)
    shared = distributed.broadcast_object({"run": f"from-rank-{r}"})

    # Two epochs of DDP on slices of the global batches: the weights must match one process's run.
    x, y = _tiny_data()
    dataset = torch.utils.data.TensorDataset(x, y)
    g = torch.Generator().manual_seed(5)
    sampler = distributed.ShardedBatchSampler(len(dataset), 8, rank=r, world=world, generator=g)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, generator=g)
    model = _train(distributed.wrap_model(_tiny_net(), torch.device("cpu")), loader, epochs=2)
    weights = [p.detach().tolist() for p in distributed.unwrap(model).parameters()]
    distributed.barrier()
    if distributed.is_main():
        Path(out).write_text(
            json.dumps(
                {
                    "world": world,
                    "summed": summed.tolist(),
                    "mask": mask.tolist(),
                    "gathered": gathered.tolist(),
                    "everywhere": everywhere.tolist(),
                    "shared": shared,
                    "weights": weights,
                    "wrapped": type(model).__name__,
                }
            )
        )
    else:
        assert gathered is None and everywhere is not None and shared == {"run": "from-rank-0"}
    distributed.shutdown()


#: The 2-process fine-tuning test's run: small enough for the suite, long enough to move the model.
FINETUNE = dict(model="digits-cnn-linf", scheme="e-at", epochs=1, n_train=480, batch_size=48, lr=0.01, attack_steps=5, device="cpu", seed=0)


def _finetune_worker(out_dir: str, *options: str) -> None:
    """Every rank fine-tunes under torchrun and writes to ``rank<r>.json`` the norms its E-AT drew and a
    fingerprint of its final weights. ``options`` (``KEY=VALUE``) override :data:`FINETUNE`."""
    from robustft import finetune
    from robustft.training.loop import Trainer
    from robustft_plugins.schemes import eat

    draws: list[str] = []
    draw, fit = eat.EAT.draw, Trainer.fit
    weights: list[float] = []

    def recording_draw(self, ctx):  # noqa: ANN001, ANN202 - test probes around the real methods
        norm = draw(self, ctx)
        draws.append(norm.value)
        return norm

    def recording_fit(self, result):  # noqa: ANN001, ANN202
        fit(self, result)
        weights.extend(float(p.double().sum()) for p in self.model.parameters())

    eat.EAT.draw = recording_draw  # type: ignore[method-assign]
    Trainer.fit = recording_fit  # type: ignore[method-assign]
    given = dict(o.split("=", 1) for o in options)
    settings: dict = {**FINETUNE, **{k: int(v) if v.isdigit() else v for k, v in given.items()}}
    if "gp" in settings:
        settings["options"] = {"gp": settings.pop("gp")}
    finetune(**settings, out=str(Path(out_dir) / "run"))
    Path(out_dir, f"rank{distributed.rank()}.json").write_text(
        json.dumps({"world": distributed.world_size(), "draws": draws, "weights": weights})
    )


# -------------------------------------------------------------------------------------- single process


def test_helpers_are_identities_without_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.init_from_env(torch.device("cpu")) is False
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    t = torch.tensor([1.0, 2.0])
    out = distributed.all_reduce_sum(t)
    assert torch.equal(out, t) and out is not t  # a new tensor, as with a group
    assert distributed.gather_tensor(t) is t
    assert distributed.broadcast_object({"a": 1}) == {"a": 1}
    net = nn.Linear(2, 2)
    assert distributed.wrap_model(net, torch.device("cpu")) is net and distributed.unwrap(net) is net
    assert distributed.shard_round_robin([1, 2, 3]) == [1, 2, 3]
    distributed.barrier()
    distributed.shutdown()


def test_init_refuses_a_partial_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustft.errors import BadInputError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(BadInputError, match="torchrun"):
        distributed.init_from_env(torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(BadInputError, match="integer"):
        distributed.init_from_env(torch.device("cpu"))


@pytest.mark.parametrize("n,batch,world", [(23, 8, 2), (24, 8, 3), (9, 4, 4), (10, 5, 2)])
def test_sharded_batches_are_the_single_process_batches_cut_in_pieces(n: int, batch: int, world: int) -> None:
    data = torch.utils.data.TensorDataset(torch.arange(n))
    g = torch.Generator().manual_seed(3)
    single = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, generator=g)
    reference = [[b[0].tolist() for b in single] for _ in range(3)]  # three epochs
    per_rank = []
    for r in range(world):
        g = torch.Generator().manual_seed(3)
        sampler = distributed.ShardedBatchSampler(n, batch, rank=r, world=world, generator=g)
        loader = torch.utils.data.DataLoader(data, batch_sampler=sampler, generator=g)
        per_rank.append([[b[0].tolist() for b in loader] for _ in range(3)])
        assert len(loader) == len(per_rank[-1][0])  # the same number of steps on every rank
    for epoch in range(3):
        kept = [b for b in reference[epoch] if len(b) >= world]  # a batch smaller than the group is dropped
        joined = [sum((per_rank[r][epoch][i] for r in range(world)), []) for i in range(len(kept))]
        assert joined == kept
        sizes = [len(per_rank[r][epoch][0]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1


def test_a_global_batch_smaller_than_the_group_is_refused() -> None:
    from robustft.errors import BadInputError

    with pytest.raises(BadInputError, match="global batch"):
        distributed.ShardedBatchSampler(10, 1, rank=0, world=2, generator=torch.Generator())


class _IndexData:
    """A stand-in data set plugin whose points are their own indices (extra points offset by 1000)."""

    def __init__(self, n: int, n_extra: int | None) -> None:
        self.n, self.n_extra = n, n_extra

    def train(self, augment: bool = True) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(torch.arange(self.n))

    def extra(self) -> torch.utils.data.Dataset | None:
        return None if self.n_extra is None else torch.utils.data.TensorDataset(1000 + torch.arange(self.n_extra))


@pytest.mark.parametrize("n_extra", [None, 7])
@pytest.mark.parametrize("n,batch,world", [(23, 8, 2), (19, 6, 3)])
def test_training_loader_slices_join_into_the_single_process_batches(n: int, batch: int, world: int, n_extra: int | None) -> None:
    """``make_train_loader(rank=r, world=w)``, plain and half-and-half with extra data, over two epochs."""
    from robustft.config import FinetuneConfig
    from robustft.data import make_train_loader

    data, config, cpu = _IndexData(n, n_extra), FinetuneConfig(batch_size=batch, workers=0), torch.device("cpu")
    single = make_train_loader(data, config, torch.Generator().manual_seed(4), cpu)
    reference = [[b[0].tolist() for b in single] for _ in range(2)]
    loaders = [make_train_loader(data, config, torch.Generator().manual_seed(4), cpu, rank=r, world=world) for r in range(world)]
    per_rank = [[[b[0].tolist() for b in loader] for _ in range(2)] for loader in loaders]
    for epoch in range(2):
        kept = [b for b in reference[epoch] if len(b) >= world]
        assert all(len(per_rank[r][epoch]) == len(kept) == len(loaders[r]) for r in range(world))
        for i, whole in enumerate(kept):
            assert sum((per_rank[r][epoch][i] for r in range(world)), []) == whole
    if n_extra is not None:
        assert any(x >= 1000 for b in reference[0] for x in b)  # the extra points are there


def test_worker_seeds_differ_by_rank_and_rank_zero_keeps_its_own() -> None:
    torch.manual_seed(11)
    distributed.seed_worker(0, 0)
    zero = torch.rand(3)
    torch.manual_seed(11)
    distributed.seed_worker(1, 0)
    one = torch.rand(3)
    torch.manual_seed(11)
    assert torch.equal(zero, torch.rand(3)) and not torch.equal(zero, one)


def test_train_context_distributed_hooks_are_identities_in_one_process() -> None:
    from robustft.contracts import TrainContext
    from robustft.training import EngineContext
    from robustft_plugins.attacks.apgd import APGDFactory

    class Bare(TrainContext):  # a third-party context that implements only the abstract methods
        attack = count_passes = adversarial_loss = lr_at = make_optimizer = None  # type: ignore[assignment]

    net, t = nn.Linear(2, 2), torch.tensor([1.0, 2.0])
    for ctx in (Bare(), EngineContext(net, torch.device("cpu"), {}, APGDFactory(), 1, 1, 1, torch.Generator(), 2)):
        out = ctx.reduce_sum(t)
        assert torch.equal(out, t) and out is not t
        assert ctx.attack_view(net) is net and ctx.distribute(net) is net
        assert ctx.global_sums(t.sum(), torch.tensor([True, False, True]).sum(), 4, t) == [3.0, 2.0, 4.0, 1.0, 2.0]
        assert ctx.global_mean_loss(t, 3) is t
        with ctx.update_autocast():  # --amp is off on the CPU
            assert not torch.is_autocast_enabled("cpu")
    wrapped = nn.Sequential(net)
    engine = EngineContext(net, torch.device("cpu"), {}, APGDFactory(), 1, 1, 1, torch.Generator(), 2, update_model=wrapped)
    assert engine.attack_view(wrapped) is net  # the engine's update wrapper maps back to the attacked module
    assert distributed.local_module(net) is net


# ------------------------------------------------------------------------------------------ 2 processes


def _torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, **THREADS, "COLUMNS": "200"}
    return subprocess.run([*TORCHRUN, *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_collectives_and_ddp_steps_on_two_gloo_processes(tmp_path: Path) -> None:
    out = tmp_path / "worker.json"
    proc = _torchrun(str(HERE), str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["world"] == 2 and seen["wrapped"] == "DistributedDataParallel"
    assert seen["summed"] == [2.0, 1.0]
    assert seen["mask"] == [1, 1, 0]
    rank0 = [[0.0, 0.0], [1.0, 1.0]]
    rank1 = [[10.0, 10.0], [11.0, 11.0], [12.0, 12.0]]
    assert seen["gathered"] == rank0 + rank1 and seen["everywhere"] == rank0 + rank1
    assert seen["shared"] == {"run": "from-rank-0"}

    # One process, the same global batches: DDP's averaged gradients give the same weights.
    x, y = _tiny_data()
    g = torch.Generator().manual_seed(5)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True, generator=g)
    # 21 points in batches of 8: the last batch (5 points) splits 3 + 2 over the ranks. DDP averages the
    # ranks' gradients; with the losses scaled by mean_loss_scale that is the gradient of the global
    # batch's mean loss, uneven pieces included (unscaled, the 3 + 2 batch would weigh its points unequally).
    reference = _tiny_net()
    opt = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    for _ in range(2):
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(reference(xb), yb).backward()
            opt.step()
    for got, want in zip(seen["weights"], reference.parameters()):
        assert torch.allclose(torch.tensor(got), want.detach(), atol=1e-5)


def test_two_process_eval_table_equals_the_single_process_one(base_model, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustft.evaluation import evaluate

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    args = ["eval", "--model", "digits-cnn-linf", "--n-ex", "40", "--steps", "5", "--batch-size", "10", "--seed", "3", "--json"]
    multi = _torchrun("-m", "robustft", *args)
    assert multi.returncode == 0, multi.stderr[-3000:]
    two = json.loads(multi.stdout)  # only rank 0 printed: one JSON document
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run: CPU kernels may round differently with other thread counts
    try:
        single = evaluate(model="digits-cnn-linf", n_ex=40, steps=5, batch_size=10, seed=3, device="cpu")
    finally:
        torch.set_num_threads(threads)
    one = json.loads(json.dumps(single.as_dict()))  # the CLI's --json is this document
    for a, b in zip(one["results"], two["results"]):
        a.pop("seconds"), b.pop("seconds")
        # Same batches, same seeds: the table is identical, not merely close (tolerance 0).
        assert a == b
    assert len(one["results"]) == len(two["results"]) == 1
    assert 0 < one["results"][0]["union"] < one["results"][0]["clean"]  # the attacks did break points
    assert multi.stderr.count("apgd-ce") == 3  # progress from rank 0 only: one bar per norm


def test_two_process_finetune_matches_one_process_of_the_same_global_batch(base_model, tmp_path: Path) -> None:
    """DDP fine-tuning on 2 gloo processes against one process: same schedule, same table within 5 points.

    The ranks' BatchNorm layers normalise their half of each batch (no SyncBatchNorm), so the runs are not
    bit-identical (the training attacks have no random start); on 200 points after one epoch the tables
    agree within 5 percentage points in clean, every norm and the union (measured: 2.5 at most).
    """
    from robustft import finetune
    from robustft.evaluation import evaluate_model
    from robustft.io import load_torch
    from robustft.models import load_model, resolve_dataset
    from robustft.norms import Norm
    from robustft.pluginmanager import registries

    proc = _torchrun(str(HERE), "finetune", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world"] == 2 and ranks[0]["draws"] and ranks[0]["draws"] == ranks[1]["draws"]  # one norm per step
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the ranks' models identical
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    batches = [r for r in records if r["kind"] == "batch"]
    assert len(batches) == 480 // 48  # written once, by rank 0
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    assert epoch["images"] == 480 and epoch["processes"] == 2  # counted over both ranks
    assert json.loads((run / "run.json").read_text())["status"] == "finished"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = finetune(**FINETUNE, out=str(tmp_path / "single"))
        regs = registries()
        dataset = resolve_dataset("digits", regs)
        tables = []
        for weights in (run / "model.pt", single.weights):
            model, _ = load_model("digits-cnn-linf", regs, torch.device("cpu"))
            model.load_state_dict(load_torch(weights, "weights")["model"])
            result = evaluate_model(
                model,
                dataset,
                [Norm.LINF, Norm.L2, Norm.L1],
                dataset.default_eps,
                suite=regs.suites.get("e-at"),
                registries=regs,
                n_ex=200,
                steps=10,
                batch_size=100,
                device=torch.device("cpu"),
            )
            tables.append({"clean": result.clean, **{n.value: result.robust[n] for n in result.robust}, "union": result.union})
    finally:
        torch.set_num_threads(threads)
    two, one = tables
    for key in one:
        assert abs(two[key] - one[key]) <= 0.05, (key, two, one)
    assert one["union"] > 0.1 and two["union"] > 0.1  # both moved the base model (union 0.045 on these points)


if __name__ == "__main__":
    if sys.argv[1] == "finetune":
        _finetune_worker(*sys.argv[2:])
    else:
        _worker(sys.argv[1])
