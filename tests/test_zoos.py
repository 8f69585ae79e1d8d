"""Model zoos, offline: RobustBench (registry, aliases, placed checkpoints, failures), timm, torchvision, file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import cli_in_process
from safetensors.torch import save_file
from test_datasets import write_cifar

from robustft.errors import BadInputError, UserError
from robustft.norms import Norm
from robustft_plugins.zoos.file_zoo import FileZoo, WithNormalization, read_state_dict
from robustft_plugins.zoos.robustbench import PAPER_MODELS, RobustBenchZoo
from robustft_plugins.zoos.torchvision_zoo import IMAGENET_MEAN, IMAGENET_STD, TorchvisionZoo

SMALL_RB_MODEL = "Sehwag2021Proxy_R18"  # a ResNet-18 in RobustBench's CIFAR-10 l-inf (and l2) registry
SMALL_RB = f"cifar10/Linf/{SMALL_RB_MODEL}"  # qualified: the name exists in both threat models


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def zoo() -> RobustBenchZoo:
    return RobustBenchZoo()


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar"))


def cli(*args: str):
    """The CLI in this process (the robustbench/timm imports are paid once); the robustbench and real-use
    commands below run in a fresh process, as a user runs them."""
    from typer.testing import CliRunner

    from robustft.cli import app

    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def assert_one_sentence(result, code: int | None = None) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode != 0 if code is None else result.returncode == code, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ------------------------------------------------------------------------------------ robustbench


def test_compat_shim_leaves_no_aliases_behind(zoo: RobustBenchZoo) -> None:
    zoo.models()
    assert "robustbench" in sys.modules
    assert "autoattack" not in sys.modules or sys.modules["autoattack"].__name__ != "pyautoattack"


def test_every_paper_alias_is_in_robustbench_registry(zoo: RobustBenchZoo) -> None:
    for alias, (dataset, threat, name, lr) in PAPER_MODELS.items():
        info = zoo.resolve(alias)
        assert info is not None, alias
        assert (info.dataset, info.threat, info.name.rsplit("/", 1)[-1], info.finetune_lr) == (
            dataset,
            {"Linf": Norm.LINF, "L2": Norm.L2}[threat],
            name,
            lr,
        )
    wrn70 = zoo.resolve("Gowal2020_WRN70")
    assert wrn70.name == "Gowal2020Uncovering_70_16_extra" and wrn70.dataset == "cifar10" and wrn70.threat is Norm.LINF


def test_registry_listing_and_names(zoo: RobustBenchZoo) -> None:
    infos = zoo.models()
    assert {i.dataset for i in infos} == {"cifar10", "cifar100", "imagenet"}
    assert {i.threat for i in infos} == {Norm.LINF, Norm.L2}
    assert len({i.name for i in infos}) == len(infos)  # names shared across threat models are qualified
    engstrom = zoo.resolve("imagenet/Linf/Engstrom2019Robustness")
    assert engstrom.dataset == "imagenet" and zoo.resolve("Engstrom2019Robustness") is None
    assert zoo.resolve(SMALL_RB).finetune_lr == 0.05  # a ResNet-18: the papers' small-net rate
    assert zoo.resolve("digits-cnn-linf") is None


def test_missing_html_and_damaged_checkpoints_are_one_sentence(zoo: RobustBenchZoo, tmp_path: Path) -> None:
    info = zoo.resolve(SMALL_RB)
    expected = tmp_path / "cifar10" / "Linf" / f"{SMALL_RB_MODEL}.pt"
    with pytest.raises(UserError) as missing:
        zoo.load(info, device=torch.device("cpu"), model_dir=str(tmp_path))
    assert str(expected) in missing.value.message and "--download" in missing.value.message
    expected.parent.mkdir(parents=True)
    expected.write_text("<!DOCTYPE html><html><body>Google Drive - quota exceeded</body></html>")
    with pytest.raises(UserError) as html:
        zoo.load(info, device=torch.device("cpu"), model_dir=str(tmp_path))
    assert "HTML page" in html.value.message and str(expected) in html.value.message
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}}, expected)
    with pytest.raises(UserError, match="does not fit"):
        zoo.load(info, device=torch.device("cpu"), model_dir=str(tmp_path))
    with pytest.raises(BadInputError, match="--model-dir"):
        zoo.load(info, device=torch.device("cpu"), checkpoint="x.pt")


def test_robustbench_eval_from_placed_checkpoint(zoo: RobustBenchZoo, tmp_path: Path, cifar_dir: Path, capsys, monkeypatch) -> None:
    """A RobustBench architecture with random weights, saved as robustbench saves checkpoints, evaluates offline."""
    torch.manual_seed(0)
    net = zoo._registry[("cifar10", "Linf")][SMALL_RB_MODEL]["model"]()
    target = tmp_path / "models" / "cifar10" / "Linf" / f"{SMALL_RB_MODEL}.pt"
    target.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, target)
    loaded = zoo.load(zoo.resolve(SMALL_RB), device=torch.device("cpu"), model_dir=str(tmp_path / "models"))
    x = torch.rand(2, 3, 32, 32)
    net.eval()
    assert torch.allclose(loaded(x), net(x), atol=1e-5)
    result = cli_in_process(
        capsys,
        monkeypatch,
        "eval",
        "--model",
        f"robustbench:{SMALL_RB}",
        "--model-dir",
        str(tmp_path / "models"),
        "--data-dir",
        str(cifar_dir),
        "--n-ex",
        "3",
        "--steps",
        "2",
        "--norms",
        "inf",
        "--json",
        "-q",
    )
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)["results"][0]
    assert row["dataset"] == "cifar10" and row["n"] == 3 and row["eps"]["inf"] == "8/255"


def test_real_use_command_stops_before_training_with_what_to_download(tmp_path: Path, cifar_dir: Path, capsys, monkeypatch) -> None:
    """Offline, 'robustft finetune --model Gowal2020_WRN70 --scheme e-at --epochs 3' resolves the alias,
    picks CIFAR-10 and its radii, and stops in its pre-flight with one sentence: the data first (here
    placed), then the checkpoint, naming the file and where it goes."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "data").symlink_to(cifar_dir, target_is_directory=True)
    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--model",
        "Gowal2020_WRN70",
        "--scheme",
        "e-at",
        "--epochs",
        "3",
        env={"ROBUSTFT_CACHE": str(cache)},
    )
    line = assert_one_sentence(result, code=1)
    expected = cache / "robustbench" / "cifar10" / "Linf" / "Gowal2020Uncovering_70_16_extra.pt"
    assert str(expected) in line and "--download" in line and "drive.google.com" in line
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # nothing was started


# ----------------------------------------------------------------------------------- file zoo


def test_file_zoo_reads_wrapped_prefixed_and_safetensors_checkpoints(tmp_path: Path, cifar_dir: Path) -> None:
    from robustft_plugins.datasets.cifar import Cifar10
    from robustft_plugins.zoos.architectures import build_architecture

    torch.manual_seed(1)
    net = build_architecture("preact-resnet18-softplus", num_classes=10, in_channels=3).eval()
    state = net.state_dict()
    pt = tmp_path / "eat.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, pt)
    st = tmp_path / "eat.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    zoo, data = FileZoo(), Cifar10().configure(data_dir=str(cifar_dir))
    x = torch.rand(2, 3, 32, 32)
    for path in (pt, st):
        info = zoo.resolve(str(path))
        model = zoo.load(info, device=torch.device("cpu"), dataset=data, arch="preact-resnet18-softplus")
        assert torch.allclose(model(x), net(x), atol=1e-5)
    with pytest.raises(UserError, match=r"does not fit .* shape mismatch"):
        zoo.load(zoo.resolve(str(pt)), device=torch.device("cpu"), dataset=Cifar10().configure(), arch="wrn-28-10")
    with pytest.raises(BadInputError, match="--arch"):
        zoo.load(zoo.resolve(str(pt)), device=torch.device("cpu"), dataset=data)
    assert zoo.resolve("Gowal2020_WRN70") is None
    with pytest.raises(UserError, match="'missing.pt' does not exist"):  # before the data set or --arch is asked for
        zoo.resolve("missing.pt")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(b"<html>not weights</html>")
    with pytest.raises(UserError, match="HTML"):
        read_state_dict(evil)


def test_file_checkpoint_evaluates_through_the_cli(tmp_path: Path, cifar_dir: Path) -> None:
    from robustft_plugins.zoos.architectures import build_architecture

    net = build_architecture("preact-resnet18", num_classes=10, in_channels=3)
    path = tmp_path / "mine.pth"
    torch.save({"model": net.state_dict()}, path)
    result = cli(
        "eval",
        "--model",
        f"file:{path}",
        "--arch",
        "preact-resnet18",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(cifar_dir),
        "--n-ex",
        "2",
        "--steps",
        "2",
        "--norms",
        "inf",
        "--json",
        "-q",
    )
    assert json.loads(result.stdout)["results"][0]["n"] == 2


# ------------------------------------------------------------------------------ timm, torchvision


def test_timm_checkpoint_evaluates_with_normalisation_folded_in(tmp_path: Path, cifar_dir: Path) -> None:
    import timm

    from robustft_plugins.datasets.cifar import Cifar10
    from robustft_plugins.zoos.timm_zoo import TimmZoo

    torch.manual_seed(2)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=10).eval()
    path = tmp_path / "test_efficientnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    zoo = TimmZoo()
    info = zoo.resolve("test_efficientnet")
    assert info is not None and zoo.resolve("Gowal2020_WRN70") is None
    model = zoo.load(info, device=torch.device("cpu"), dataset=Cifar10().configure(data_dir=str(cifar_dir)), checkpoint=str(path))
    assert isinstance(model, WithNormalization)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(net.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(net.pretrained_cfg["std"]).view(1, 3, 1, 1)
    assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)
    result = cli(
        "eval",
        "--model",
        "timm:test_efficientnet",
        "--checkpoint",
        str(path),
        "--dataset",
        "cifar10",
        "--data-dir",
        str(cifar_dir),
        "--n-ex",
        "2",
        "--steps",
        "2",
        "--norms",
        "inf",
        "--json",
        "-q",
    )
    assert json.loads(result.stdout)["results"][0]["n"] == 2


class _CreatesFile:
    """Unpickling this creates a file: the payload of a planted hub checkpoint."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_timm_hub_weights_naming_their_own_file_are_unpickled_safely(tmp_path: Path, monkeypatch) -> None:
    import pickle

    from huggingface_hub.utils import EntryNotFoundError
    from timm.models import _builder, _hub

    from robustft_plugins.zoos.timm_zoo import _refused, safe_weight_loading

    assert _hub._has_hf_hub, "timm cannot import huggingface_hub, so every --download fails (bound huggingface_hub)"
    marker, planted = tmp_path / "pwned", tmp_path / "pytorch_model.bin"
    torch.save({"w": _CreatesFile(str(marker))}, planted)

    def download(repo_id, filename, **kwargs):  # the hub, offline: no safetensors, the planted .bin
        if filename.endswith(".safetensors"):
            raise EntryNotFoundError(f"{filename} not found")
        return str(planted)

    monkeypatch.setattr(_hub, "hf_hub_download", download)
    # timm's own call for a model that names its weights file: weights_only=False, so the payload runs
    _builder.load_state_dict_from_hf("acme/model", "pytorch_model.bin")
    assert marker.exists()
    marker.unlink()
    with safe_weight_loading(), pytest.raises(pickle.UnpicklingError) as refused:
        _builder.load_state_dict_from_hf("acme/model", "pytorch_model.bin")
    assert not marker.exists()
    assert (
        _builder.load_state_dict_from_hf.__name__ == "load_state_dict_from_hf"
        and _builder.load_state_dict_from_hf is _hub.load_state_dict_from_hf
    )  # put back
    assert "(it calls io.open)" in _refused("vit_x", refused.value).message


def test_timm_vit_is_built_for_the_data_sets_image_size(cifar_dir: Path) -> None:
    from robustft_plugins.datasets.cifar import Cifar10
    from robustft_plugins.zoos.timm_zoo import TimmZoo

    zoo = TimmZoo()
    model = zoo.load(zoo.resolve("test_vit"), device=torch.device("cpu"), dataset=Cifar10().configure(data_dir=str(cifar_dir)))
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_torchvision_zoo_weight_enums_checkpoint_and_offline_refusal(tmp_path: Path, cifar_dir: Path, monkeypatch) -> None:
    import torchvision

    from robustft_plugins.datasets.cifar import Cifar10

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    zoo, data = TorchvisionZoo(), Cifar10().configure(data_dir=str(cifar_dir))
    assert zoo.resolve("resnet18").name == "resnet18" and zoo.resolve("Gowal2020_WRN70") is None
    with pytest.raises(BadInputError, match="did you mean 'IMAGENET1K_V1'"):
        zoo.resolve("resnet18.IMAGENET1K_V")
    info = zoo.resolve("resnet18.IMAGENET1K_V1")
    with pytest.raises(BadInputError, match="1000 classes"):
        zoo.load(info, device=torch.device("cpu"), dataset=data)
    with pytest.raises(UserError, match="--download"):
        zoo.load(info, device=torch.device("cpu"))
    torch.manual_seed(3)
    net = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "r18.pt"
    torch.save(net.state_dict(), path)
    model = zoo.load(zoo.resolve("resnet18"), device=torch.device("cpu"), dataset=data, checkpoint=str(path))
    x = torch.rand(2, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(model(x), net((x - mean) / std), atol=1e-5)


def test_list_models_filters_by_zoo_dataset_and_threat(zoo: RobustBenchZoo) -> None:
    result = cli("list", "models", "--zoo", "robustbench", "--dataset", "cifar10", "--threat", "L2", "--json")
    rows = json.loads(result.stdout)["models"]
    assert rows and all(r["zoo"] == "robustbench" and r["dataset"] == "cifar10" and r["threat"] == "2" for r in rows)
    assert any("Gowal2020_WRN70_L2" in r["aliases"] for r in rows)


# ----------------------------------------------------------------------------------- shipped weights


def test_shipped_cifar10_model_loads_offline_and_classifies_cifar_shaped_inputs():
    from robustft.models import load_model
    from robustft.pluginmanager import registries

    model, info = load_model("cifar10-preact-w16-linf", registries(), torch.device("cpu"))
    assert (info.dataset, info.threat, info.finetune_lr) == ("cifar10", Norm.LINF, 0.05)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000 and not model.training
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_shipped_weights_are_checked_against_their_sha256(tmp_path, monkeypatch):
    import shutil

    from robustft.errors import UserError
    from robustft_plugins.zoos import builtin

    shipped = builtin.SHIPPED["cifar10-preact-w16-linf"]
    copy = tmp_path / "weights" / shipped.file
    copy.parent.mkdir()
    shutil.copy(Path(builtin.__file__).parent / "weights" / shipped.file, copy)
    monkeypatch.setattr(builtin, "__file__", str(tmp_path / "builtin.py"))
    assert isinstance(builtin.load_shipped("cifar10-preact-w16-linf"), torch.nn.Module)  # the copy is intact
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises(UserError, match="are damaged: their SHA-256 does not match; reinstall robustft"):
        builtin.load_shipped("cifar10-preact-w16-linf")
    copy.unlink()
    with pytest.raises(UserError, match="are missing from the installation"):
        builtin.load_shipped("cifar10-preact-w16-linf")
