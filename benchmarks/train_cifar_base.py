"""Train the built-in l-inf-robust CIFAR-10 base model on a CPU, resumably.

    python benchmarks/train_cifar_base.py                      # train (or continue) in ~/.cache/robustft-train
    python benchmarks/train_cifar_base.py --export DIR         # also write DIR/<name>.safetensors and its card

The recipe (fixed here so that one command re-creates the model; docs/reproduction.md explains the choices):

* **Architecture**: PreAct ResNet-18 at a quarter of the width (stages of 16, 32, 64, 128 channels, 0.7M
  parameters, ReLU), the network both papers use on CIFAR-10 (E-AT App. A, RAMP Sec. 5) scaled so that an
  epoch of adversarial training fits in minutes on two CPU cores.
* **Training**: FGSM with a random start (Wong, Rice & Kolter, "Fast is better than free", ICLR 2020):
  delta ~ U[-eps, eps]^d, one signed-gradient step of size alpha = 1.25 eps, projected to the l-inf ball of
  radius eps = 8/255 and to the image box; the update is cross-entropy at that point. SGD (momentum 0.9,
  weight decay 5e-4, batch 128) with the one-cycle learning rate of that paper (0 -> 0.2 over the first 40% of
  the steps, back to 0 at the end), updated per batch.
* **Data**: the 50,000 CIFAR-10 training images (the JPEG ImageFolder copy), random crop with 4 pixels of zero
  padding and horizontal flip, drawn from generators seeded per (seed, epoch, batch), so a resumed run draws
  exactly what an uninterrupted one would.

Catastrophic overfitting (FGSM accuracy rising while PGD accuracy collapses) is watched at every epoch end:
a 10-step PGD on a fixed set of 500 training images (un-augmented) is logged next to the FGSM accuracy of the
last batch; under overfitting the first collapses towards 0 within an epoch.

Progress is checkpointed atomically every ``--checkpoint-every`` batches and at each epoch end; rerunning the
same command continues from the last checkpoint. Kill it at any moment.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor, nn

NAME = "cifar10-preact-w16-linf"
WIDTH = 16
EPS = float(Fraction(8, 255))
ALPHA = 1.25 * EPS
WATCH = 500  # training images attacked at each epoch end, for the overfitting watch
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def default_data() -> Path:
    return Path(os.environ.get("ROBUSTFT_CIFAR10_JPEG", Path.home() / ".cache" / "robustft-data" / "cifar10-jpeg"))


def load_split(root: Path, split: str, cache: Path) -> tuple[Tensor, Tensor]:
    """All images of ``root/split`` as uint8 N x 3 x 32 x 32 and their labels, decoded once and cached."""
    if cache.is_file():
        blob = torch.load(cache, weights_only=True)
        return blob["x"], blob["y"]
    from PIL import Image

    folder = root / split
    if not folder.is_dir():
        sys.exit(f"No CIFAR-10 image folder at {folder}; extract the JPEG archive there or pass --data.")
    images, labels = [], []
    for label, name in enumerate(CLASSES):
        for path in sorted((folder / name).iterdir()):
            with Image.open(path) as img:
                array = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
            images.append(array.view(32, 32, 3).permute(2, 0, 1))
            labels.append(label)
    x, y = torch.stack(images), torch.tensor(labels)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({"x": x, "y": y}, cache)
    return x, y


def save_atomic(obj: object, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Random crop with 4 pixels of zero padding, then a horizontal flip with probability 1/2."""
    n = x.shape[0]
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    offsets = torch.randint(0, 9, (n, 2), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[i, :, dy : dy + 32, dx : dx + 32]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


def fgsm_rs(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator) -> Tensor:
    """FGSM with a uniform random start (Wong et al. 2020, Alg. 3), in the ball and the box."""
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * EPS
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x + delta), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + ALPHA * grad.sign()).clamp(-EPS, EPS)
    return (x + delta).clamp(0, 1)


def pgd_accuracy(model: nn.Module, x: Tensor, y: Tensor, steps: int = 10) -> float:
    """Accuracy under a 10-step l-inf PGD (step eps/4, no random start), in eval mode."""
    model.eval()
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = ((delta.detach() + EPS / 4 * grad.sign()).clamp(-EPS, EPS) + x).clamp(0, 1) - x
        delta.requires_grad_(True)
    with torch.no_grad():
        return (model(x + delta).argmax(1) == y).float().mean().item()


def one_cycle(step: int, total: int, peak: float) -> float:
    """Triangular one-cycle learning rate: 0 -> peak at 40% of the steps, back to 0 at the end."""
    rise = 0.4 * total
    return peak * step / rise if step < rise else peak * max(total - step, 0) / (total - rise)


def build_model() -> nn.Module:
    from robustft_plugins.zoos.architectures import PreActResNet

    return PreActResNet((2, 2, 2, 2), width=WIDTH, num_classes=10)


def train(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_all, y_all = load_split(Path(args.data), "train", out / "train-uint8.pt")
    watch = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(1234))[:WATCH]
    x_watch, y_watch = x_all[watch].float() / 255, y_all[watch]
    n = len(y_all)
    batches = n // args.batch_size  # the last partial batch is dropped, as in the reference recipe
    total = args.epochs * batches

    torch.manual_seed(args.seed)
    model = build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9, weight_decay=5e-4, nesterov=True)
    state_path = out / "state.pt"
    start = 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
        print(f"resumed at step {start}/{total}", file=sys.stderr)
    log_path = out / "log.jsonl"

    def checkpoint(step: int) -> None:
        save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, state_path)

    tic = time.perf_counter()
    seen = 0
    for step in range(start, total):
        epoch, index = divmod(step, batches)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
        idx = perm[index * args.batch_size : (index + 1) * args.batch_size]
        generator = torch.Generator().manual_seed((args.seed * 1000 + epoch) * 100_000 + index)
        x = augment(x_all[idx], generator).float() / 255
        y = y_all[idx]
        model.train()
        x_adv = fgsm_rs(model, x, y, generator)
        for group in optimizer.param_groups:
            group["lr"] = one_cycle(step, total, args.lr)
        logits = model(x_adv)
        loss = nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        done = step + 1
        if done % args.checkpoint_every == 0 or done % batches == 0:
            checkpoint(done)
        if done % 50 == 0:
            rate = seen / (time.perf_counter() - tic)
            print(f"epoch {epoch + 1} batch {index + 1}/{batches} loss {loss.item():.3f} {rate:.0f} img/s", file=sys.stderr)
        if done % batches == 0:
            fgsm_acc = (logits.argmax(1) == y).float().mean().item()
            pgd_acc = pgd_accuracy(model, x_watch, y_watch)
            record = {
                "epoch": epoch + 1,
                "loss": loss.item(),
                "fgsm_batch_acc": fgsm_acc,
                "pgd10_watch_acc": pgd_acc,
                "seconds": time.perf_counter() - tic,
                "images": seen,
            }
            with open(log_path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
            print(json.dumps(record), file=sys.stderr)
            if not math.isfinite(loss.item()):
                sys.exit("The loss is not finite; stopping.")
    weights = out / "final.pt"
    save_atomic(model.state_dict(), weights)
    return weights


def export(weights: Path, folder: Path) -> Path:
    """Write the weights as safetensors (fp32) into ``folder`` and print the SHA-256 the zoo pins."""
    import hashlib

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in torch.load(weights, weights_only=True).items()}
    target = folder / f"{NAME}.safetensors"
    save_file(state, str(target), metadata={"name": NAME, "recipe": "fgsm-rs eps 8/255 alpha 10/255"})
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    print(f"{target} sha256 {digest}")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_data()), help="CIFAR-10 ImageFolder root (train/, test/).")
    parser.add_argument("--out", default=str(Path.home() / ".cache" / "robustft-train" / NAME), help="Checkpoint folder.")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.2, help="Peak of the one-cycle learning rate.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--export", type=Path, help="Write the trained weights as safetensors into this folder.")
    args = parser.parse_args()
    weights = train(args)
    if args.export:
        export(weights, args.export)


if __name__ == "__main__":
    main()
