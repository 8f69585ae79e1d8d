"""Host-device synchronisation: the counter the tests use, MSD's step loop, and each scheme's batch.

On a GPU every read of a tensor's value by the host waits for the queued work. The attack loops must make
none per step; a scheme's batch makes one, for its statistics (``TrainContext.global_sums``). APGD's and
the geometry's own checks are in tests/test_apgd.py and tests/test_lp.py.
"""

from __future__ import annotations

import pytest
import torch
from helpers import count_host_syncs
from torch import nn

from robustft.config import FinetuneConfig
from robustft.norms import Norm
from robustft.pluginmanager import registries
from robustft.training import EngineContext
from robustft_plugins.attacks.apgd import APGDFactory
from robustft_plugins.schemes.msd import MultiSteepestDescent

EPS = {Norm.LINF: 0.1, Norm.L2: 0.5, Norm.L1: 2.0}
pytestmark = pytest.mark.usefixtures("one_thread")


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(16, 1, 4, 4, generator=g), torch.randint(0, 5, (16,), generator=g)


def _context(steps: int) -> EngineContext:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    return EngineContext(
        model, torch.device("cpu"), EPS, APGDFactory(), steps, 1, 1, torch.Generator().manual_seed(0), 5, config=FinetuneConfig(lr=0.05)
    )


def test_the_counter_sees_every_kind_of_host_read_and_nothing_else() -> None:
    x = torch.rand(6)
    mask = x > 0.5
    with count_host_syncs() as quiet:
        torch.where(mask, x, 0.0).sum()
        x.masked_fill(mask, 1.0).max(dim=0)
        x[torch.arange(3)]
    assert not quiet
    with count_host_syncs() as syncs:
        bool(mask.any()), float(x.sum()), x.max().item(), int(mask.sum())
        x[mask], mask.nonzero(), x.tolist(), x.cpu()
    assert syncs == {
        "aten::_local_scalar_dense": 4,
        "aten::index.Tensor (boolean mask)": 1,
        "aten::nonzero": 1,
        ".tolist()": 1,
        ".cpu()": 1,
    }
    assert torch.Tensor.tolist.__name__ == "tolist"  # the patches are gone after the block


def test_msd_step_loop_reads_nothing_on_the_host() -> None:
    ctx, (x, y) = _context(1), _batch()
    model = ctx.model.eval()
    for steps in (4, 16):
        with count_host_syncs() as syncs:
            result = MultiSteepestDescent(EPS, steps, norms=tuple(EPS))(model, x, y)
        assert not syncs, steps
        assert int(result.steps_taken.sum()) == steps * x.shape[0]  # the per-norm counts stayed on the device


#: Reads from the CPU generator ``ctx.rng`` (which norm to attack): no device is waited for.
CPU_DRAWS = {"e-at": 1, "e-at-uniform": 1, "sat": 1}


@pytest.mark.parametrize("name", ["e-at", "e-at-uniform", "sat", "avg", "max", "msd", "ramp", "lp-at", "l1-at", "clean"])
def test_a_schemes_batch_reads_the_device_once_however_many_attack_steps(name: str) -> None:
    """One host read per batch, for the statistics, and none per attack step."""
    scheme_class = registries().schemes.get(name)
    norms = (Norm.LINF,) if name == "lp-at" else scheme_class.default_norms
    x, y = _batch()
    seen = []
    for steps in (2, 6):
        ctx = _context(steps)
        scheme = scheme_class(norms)
        scheme.on_epoch_start(ctx)
        with count_host_syncs() as syncs:
            loss, logs = scheme.loss(ctx.model, x, y, ctx)
        seen.append(dict(syncs))
        assert loss.requires_grad and logs
    assert seen[0] == seen[1]
    assert sum(seen[0].values()) == 1 + CPU_DRAWS.get(name, 0), seen[0]
