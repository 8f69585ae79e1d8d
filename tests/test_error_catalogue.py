"""The catalogue of user errors (docs/errors.md) against the code and the CLI.

The catalogue is generated from the source: every ``raise SomeError(...)`` in ``robustft/`` and
``plugins/`` whose class derives from :class:`robustft.errors.UserError`, with its message template and
exit code. ``python tests/test_error_catalogue.py --write`` regenerates the table in docs/errors.md;
the tests below fail when an error is missing from it, and run a set of mistakes through the CLI,
checking each message against its catalogue entry (template and exit code).
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "errors.md"
BEGIN, END = "<!-- catalogue:begin -->", "<!-- catalogue:end -->"
BASE_CLASSES = {"UserError": 1, "BadInputError": 2, "UnknownNameError": 2}


@dataclass(frozen=True)
class Entry:
    error: str
    exit_code: str
    template: str
    where: str

    def regex(self) -> re.Pattern[str]:
        """The template as a pattern: literal text exactly, each ``{...}`` any text."""
        parts = re.split(r"\{[^{}]*\}", self.template)
        return re.compile(".+?".join(re.escape(p) for p in parts) + "$", re.S)


def _sources() -> dict[Path, ast.Module]:
    files = sorted([*(ROOT / "robustft").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")])
    return {f: ast.parse(f.read_text(encoding="utf-8")) for f in files}


def _error_classes(trees: dict[Path, ast.Module]) -> dict[str, int]:
    classes = dict(BASE_CLASSES)
    changed = True
    while changed:  # subclasses of subclasses, in any module
        changed = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if not isinstance(node, ast.ClassDef) or node.name in classes:
                    continue
                bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", None) for b in node.bases]
                parent = next((b for b in bases if b in classes), None)
                if parent is None:
                    continue
                code = classes[parent]
                for statement in node.body:
                    if isinstance(statement, ast.Assign) and any(getattr(t, "id", "") == "exit_code" for t in statement.targets):
                        code = statement.value.value  # type: ignore[attr-defined]
                classes[node.name] = code
                changed = True
    return classes


def _template(node: ast.expr) -> str:
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        out = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                out.append(str(value.value))
            else:
                conversion = {115: "!s", 114: "!r", 97: "!a"}.get(value.conversion, "")  # type: ignore[attr-defined]
                out.append("{" + ast.unparse(value.value)[:40] + conversion + "}")  # type: ignore[attr-defined]
        return "".join(out)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _template(node.left) + _template(node.right)
    return "{" + ast.unparse(node)[:40] + "}"


def _function_of(tree: ast.Module) -> dict[int, str]:
    owner: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in ast.walk(node):
                if isinstance(child, ast.Raise):
                    owner.setdefault(child.lineno, node.name)  # ast.walk visits outer functions first
    return owner


@functools.lru_cache(maxsize=1)  # parsing every module takes a second; the sources do not change in a session
def catalogue() -> list[Entry]:
    """Every user error raised in robustft/ and plugins/, in file order."""
    trees = _sources()
    classes = _error_classes(trees)
    entries: list[Entry] = []
    for path, tree in trees.items():
        functions = _function_of(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            func = node.exc.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name not in classes:
                continue
            call = node.exc
            if name == "UnknownNameError":
                kind = _template(call.args[0]) if call.args else "{kind}"
                hint = call.args[3] if len(call.args) > 3 else next((k.value for k in call.keywords if k.arg == "hint"), None)
                # The suggestion is "did you mean 'x'?" or "valid <kind>s: ...", then the optional hint.
                template = f"Unknown {kind} {{name!r}}: {{suggestion}}"
                if hint is not None:
                    template += "{hint}"
            else:
                template = _template(call.args[0]) if call.args else "{message}"
            code = str(classes[name])
            for keyword in call.keywords:
                if keyword.arg == "exit_code":
                    code = "130 (SIGINT) / 143 (SIGTERM)" if name == "RunInterrupted" else ast.unparse(keyword.value)
            where = f"{path.relative_to(ROOT).as_posix()}:{functions.get(node.lineno, '<module>')}"
            entries.append(Entry(name, code, template, where))
    entries.sort(key=lambda e: (e.where.split(":")[0], e.template))
    return list(dict.fromkeys(entries))


def render(entries: list[Entry]) -> str:
    lines = ["| exit | error | message | raised in |", "| --- | --- | --- | --- |"]
    for e in entries:
        message = e.template.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {e.exit_code} | `{e.error}` | {message} | `{e.where}` |")
    return "\n".join(lines)


def documented() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text[text.index(BEGIN) + len(BEGIN) : text.index(END)]


def write_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + render(catalogue()) + "\n" + text[end:], encoding="utf-8")


# ------------------------------------------------------------------------------------------ the tests


def test_every_user_error_is_in_the_catalogue():
    table = documented()
    missing = [e for e in catalogue() if render([e]).splitlines()[-1] not in table]
    assert not missing, (
        f"{len(missing)} error(s) missing from docs/errors.md (run: python tests/test_error_catalogue.py --write): "
        + "; ".join(f"{e.where}: {e.template}" for e in missing[:5])
    )


def find(fragment: str) -> Entry:
    matches = [e for e in catalogue() if fragment in e.template]
    assert len(matches) >= 1, f"no catalogue entry contains {fragment!r}"
    return matches[0]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    from robustft.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return code, lines[0][len("error: ") :]


# (command line, a fragment that picks the catalogue entry); files named NAME are created in tmp_path.
CLI_CASES = [
    (["finetune", "--scheme", "e-atx"], "Unknown {self.kind}"),
    (["finetune", "--model", "nope:digits-cnn-linf"], "Unknown model zoo"),
    (["finetune", "--model", "digits-cnn-lin"], "Unknown model {name!r}"),
    (["finetune", "--norms", "3"], "Unknown norm"),
    (["finetune", "--eps", "inf=8/0"], "divides by zero"),
    (["finetune", "--eps", "2=-1"], "Radius {format_radius(value)} must be positive"),
    (["finetune", "--eps", "inf=abc"], "is not a number: write it"),
    (["finetune", "--eps", "foo"], "NORM=RADIUS"),
    (["finetune", "--option", "noequals"], "Option {item!r} is not of the form NAME=VALUE."),
    (["finetune", "--option", "sampling=sometimes"], "Option {self.name} of {owner} must be"),
    (["finetune", "--option", "speed=fast"], "Unknown option of scheme"),
    (["finetune", "--scheme", "lp-at", "--option", "select=outer"], "Scheme {scheme!r} takes no options"),
    (["list", "attacks", "--options"], "--options lists the options of schemes"),
    (["finetune", "--epochs", "0"], "{source}: {name!r} must be positive"),
    (["finetune", "--workers", "-1"], "{source}: {name!r} must not be negative"),
    (["finetune", "--lr-schedule", "zigzag"], "{source}: {name!r} must be one of"),
    (["finetune", "--eps", "inf=2"], "is larger than the [0,1] box"),
    (["finetune", "--device", "cuda"], "has no CUDA GPU"),
    (["finetune", "--device", "quantum"], "is not a torch device"),
    (["finetune", "--config", "MISSING.toml"], "Config file {str(path)!r} does not exist"),
    (["finetune", "--config", "BAD.toml"], "is not valid TOML ({exc})"),
    (["finetune", "--config", "UNKNOWN.toml"], "Unknown setting in"),
    (["finetune", "--config", "NOTTABLE.toml"], "'finetune' must be a table"),
    (["finetune", "--config", "WRONGTYPE.toml"], "{source}: {name!r} must be an integer"),
    (["finetune", "--resume", "MISSING"], "Run folder {str(run_dir)!r} does not exist"),
    (["finetune", "--resume", "EMPTYRUN"], "is not a robustft run folder"),
    (["finetune", "--resume", "EMPTYRUN", "--config", "BAD.toml"], "Give --resume or --config"),
    (["finetune", "--out", "FILE/run"], "cannot be created: {str(anchor)!r} is a file"),
    (["finetune", "--out", "BUSY"], "is not empty; choose another --out or remove it"),  # not export's, whose message goes on
    (["eval", "--model", "digits-cnn-linf", "--run", "x"], "Give --model or --run, not both"),
    (["eval", "--model", "digits-cnn-linf", "--n-ex", "0"], "--n-ex must be positive"),
    (["eval", "--model", "digits-cnn-linf", "--suite", "e-att"], "Unknown {self.kind}"),
    (["eval", "--model", "digits-cnn-linf", "--steps", "0"], "--steps must be positive, got"),
    (["eval", "--run", "EMPTYRUN"], "is not a robustft run folder"),
    (["eval"], "No run found"),
    (["finetune", "--resume", "FINISHED"], "has already finished"),
    (["eval", "--run", "MISSING"], "Run folder {str(run_dir)!r} does not exist"),
    (["eval", "--run", "DAMAGEDJSON"], "is damaged (not valid JSON)"),
    (["eval", "--run", "UNFINISHED"], "has no final weights (model.pt): it did not finish"),
    (["geometry"], "Give the input dimension"),
    (["geometry", "--dim", "64", "--eps", "1=2"], "Give the {norm.label} radius"),
]


def prepare(tmp_path: Path) -> dict[str, str]:
    import json

    (tmp_path / "BAD.toml").write_text("epochs = [\n")
    (tmp_path / "UNKNOWN.toml").write_text("epoch = 3\n")
    (tmp_path / "NOTTABLE.toml").write_text("finetune = 3\n")
    (tmp_path / "WRONGTYPE.toml").write_text('epochs = "three"\n')
    (tmp_path / "EMPTYRUN").mkdir()
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "BUSY").mkdir()
    (tmp_path / "BUSY" / "precious").write_text("x")
    (tmp_path / "DAMAGEDJSON").mkdir()
    (tmp_path / "DAMAGEDJSON" / "run.json").write_text("{not json")
    (tmp_path / "FINISHED").mkdir()
    (tmp_path / "FINISHED" / "run.json").write_text(
        json.dumps({"base_model": "digits-cnn-linf", "dataset": "digits", "scheme": "e-at", "status": "finished"})
    )
    (tmp_path / "UNFINISHED").mkdir()
    (tmp_path / "UNFINISHED" / "run.json").write_text(json.dumps({"base_model": "digits-cnn-linf", "dataset": "digits", "scheme": "e-at"}))
    names = [
        "BAD.toml",
        "UNKNOWN.toml",
        "NOTTABLE.toml",
        "WRONGTYPE.toml",
        "MISSING.toml",
        "EMPTYRUN",
        "MISSING",
        "FILE",
        "BUSY",
        "DAMAGEDJSON",
        "UNFINISHED",
        "FINISHED",
    ]
    return {name: str(tmp_path / name) for name in names}


@pytest.mark.parametrize("argv,fragment", CLI_CASES, ids=[" ".join(a)[:60] for a, _ in CLI_CASES])
def test_cli_error_matches_its_catalogue_entry(argv, fragment, tmp_path, capsys):
    import torch

    if "cuda" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    paths = prepare(tmp_path)
    argv = [
        paths.get(a.split("/")[0], a.split("/")[0]) + ("/" + a.split("/", 1)[1] if "/" in a and a.split("/")[0] in paths else "")
        if a.split("/")[0] in paths
        else a
        for a in argv
    ]
    code, message = run_main(argv, capsys)
    entry = find(fragment)
    assert entry.regex().match(message), (entry.template, message)
    assert str(code) == entry.exit_code or (entry.exit_code.startswith("130") and code in (130, 143)), (code, entry)


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    if "--write" in sys.argv:
        write_doc()
    else:
        sys.stdout.write(render(catalogue()) + "\n")
