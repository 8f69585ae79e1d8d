"""robustft's APGD against pyautoattack's ``APGDAttack``, side by side, per norm.

Both run APGD-CE with one restart, a random start, the same number of steps, the same model, batch
and device, timed alternately (ours, theirs, ours, ...) in one process; the fastest run of each counts.
"Broken" counts the points the returned batch misclassifies (robustft's points are also checked against
their ball and the box), summed over random-start seeds ``0 .. seeds - 1``: one seed's count moves by a
few points with the start alone. Target on CPU: time ratio (ours / theirs) <= 1.0 and at least as many
points broken.
"""

from __future__ import annotations

from typing import Any

import torch
from common import Workload, broken, timed_alternating

from robustft.lp import check_in_ball_and_box
from robustft.norms import Norm

NORMS = (Norm.LINF, Norm.L2, Norm.L1)


def compare_apgd(work: Workload, device: torch.device, steps: int, repeats: int, seeds: int = 1) -> list[dict[str, Any]]:
    from pyautoattack.autopgd_base import APGDAttack

    from robustft_plugins.attacks.apgd import APGDFactory

    rows = []
    for norm in NORMS:
        eps = work.eps[norm.value]
        ours = APGDFactory().build(norm, eps, steps=steps, purpose="eval", restarts=1, loss="ce")
        theirs = APGDAttack(
            work.model,
            n_iter=steps,
            norm=norm.autoattack_name,
            n_restarts=1,
            eps=eps,
            seed=0,
            loss="ce",
            device=device,
        )
        times, outputs = timed_alternating(
            {
                "ours": lambda: ours(work.model, work.x, work.y),  # noqa: B023 - timed in this iteration only
                "theirs": lambda: theirs.perturb(work.x.clone(), work.y.clone()),  # noqa: B023
            },
            device,
            repeats,
        )
        t_ours, t_theirs, res, adv = times["ours"], times["theirs"], outputs["ours"], outputs["theirs"]
        valid = check_in_ball_and_box(res.x_adv, work.x, norm, eps)
        broken_ours = broken(work.model, res.x_adv[valid], work.y[valid])
        broken_theirs = broken(work.model, adv, work.y)
        outside = int((~valid).sum())
        for seed in range(1, seeds):  # untimed: the counts only
            res = APGDFactory().build(norm, eps, steps=steps, purpose="eval", restarts=1, loss="ce", seed=seed)(work.model, work.x, work.y)
            valid = check_in_ball_and_box(res.x_adv, work.x, norm, eps)
            broken_ours += broken(work.model, res.x_adv[valid], work.y[valid])
            outside += int((~valid).sum())
            theirs = APGDAttack(
                work.model,
                n_iter=steps,
                norm=norm.autoattack_name,
                n_restarts=1,
                eps=eps,
                seed=seed,
                loss="ce",
                device=device,
            )
            broken_theirs += broken(work.model, theirs.perturb(work.x.clone(), work.y.clone()), work.y)
        rows.append(
            {
                "workload": work.name,
                "norm": norm.label,
                "eps": eps,
                "steps": steps,
                "batch": int(work.x.shape[0]),
                "seconds_ours": t_ours,
                "seconds_pyautoattack": t_theirs,
                "time_ratio": t_ours / t_theirs,
                "seeds": seeds,
                "broken_ours": broken_ours,
                "broken_pyautoattack": broken_theirs,
                "outside_ball_ours": outside,
            }
        )
    return rows
