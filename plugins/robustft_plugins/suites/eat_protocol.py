"""The E-AT evaluation protocol (Croce & Hein, ICML 2022, Sec. 5): APGD-CE then APGD-T, per norm.

Per norm, AutoAttack's two APGD attacks with its standard settings:

* l-inf and l2: APGD-CE with 1 restart, then APGD-T (targeted DLR) with 9 target classes;
* l1: APGD-CE with 5 restarts, then APGD-T with 5 target classes, both with the large-radius schedule
  (3 eps, 2 eps, eps over 30/30/40% of the steps, AutoAttack's ``use_largereps``).

Each attack takes ``steps`` iterations (the papers use 100). The evaluator attacks with APGD-T only the
points APGD-CE left correctly classified and checks every adversarial point itself.

Few classes: the number of targets is capped at ``num_classes - 1``. AutoAttack's targeted DLR loss
needs 4 classes; robustft's APGD replaces the missing fourth logit by the third one, so 3 classes work.
With 2 classes the only possible target is the class APGD-CE already pushes towards and the DLR ratio is
undefined, so the suite runs APGD-CE alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robustft.plugin import Attack, EvalSuite, Norm, hookimpl

__all__ = ["EATProtocol", "register_suites"]


class EATProtocol(EvalSuite):
    """APGD-CE + APGD-T per norm, with the E-AT paper's restarts, targets and l1 schedule."""

    name = "e-at"
    description = "E-AT protocol: APGD-CE then APGD-T (9 targets; l1: 5 restarts, 5 targets, large radii)."
    aliases = ("eat",)

    #: (CE restarts, number of targets) per norm, as AutoAttack's standard version.
    settings: dict[Norm, tuple[int, int]] = {Norm.LINF: (1, 9), Norm.L2: (1, 9), Norm.L1: (5, 5)}

    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        norm = Norm.parse(norm)
        factory = registry.get("apgd")
        restarts, n_targets = self.settings[norm]
        common: dict[str, Any] = {"steps": steps, "purpose": "eval", "seed": seed}
        if norm is Norm.L1:
            common["use_largereps"] = True
        chosen = [("apgd-ce", factory.build(norm, eps, loss="ce", restarts=restarts, **common))]
        n_targets = min(n_targets, num_classes - 1)
        if num_classes >= 3:
            chosen.append(
                (
                    "apgd-t",
                    factory.build(norm, eps, loss="dlr-targeted", restarts=1, n_target_classes=n_targets, **common),
                )
            )
        return chosen


@hookimpl
def register_suites(register: Callable[[Any], None]) -> None:
    register(EATProtocol())
