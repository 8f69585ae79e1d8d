"""An example third-party robustft plugin.

``my-scheme`` averages the clean cross-entropy and the cross-entropy at an adversarial point whose norm
is drawn uniformly per batch from the training norms. It exists to show the plugin contract end to
end; install it with ``pip install ./examples/robustft-myscheme`` and run
``robustft finetune --scheme my-scheme``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from robustft.plugin import Norm, Scheme, SchemeOptions, hookimpl, option


class MyScheme(Scheme):
    name = "my-scheme"
    description = "example plugin: mean of clean and adversarial CE, norm drawn uniformly per batch"
    default_norms = (Norm.LINF, Norm.L1)

    # One declaration per option: users write --option clean-weight=0.25 (or [options] clean-weight = 0.25 in a
    # config file); robustft checks the value against the range once, and the scheme reads it typed.
    class Options(SchemeOptions):
        clean_weight: float = option(0.5, range=(0, 1), help="weight of the clean loss (1 is clean training)")

    options: Options

    def loss(self, model, x, y, ctx):
        norm = self.norms[int(torch.randint(len(self.norms), (1,), generator=ctx.rng))]
        adversarial = ctx.attack(norm, x, y)
        clean_loss = F.cross_entropy(model(x), y)
        ctx.count_passes(forward=1, images=x.shape[0])
        adv_loss = F.cross_entropy(model(adversarial.x_adv), y)
        weight = self.options.clean_weight
        loss = weight * clean_loss + (1 - weight) * adv_loss
        return loss, {"norm": norm.value, "clean_loss": float(clean_loss), "adv_loss": float(adv_loss)}


@hookimpl
def register_schemes(register):
    register(MyScheme)
