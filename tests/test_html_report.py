"""`robustft report RUN`: one self-contained HTML page of a run (robustft/html_report.py).

The pages are made from run folders in the formats robustft writes (run.json, config.toml with its
[provenance], metrics.jsonl, eval.json); one slow test makes the folder for real from a tiny fine-tuning run.
Every page is parsed with a strict HTML parser; where a Chromium-family browser is installed, it is opened in
it (headless, driven over the DevTools protocol through a pipe: no network, no port) and must render without
a console error, show the table and draw every figure.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import cli_in_process

BASE = {
    "name": "digits-cnn-linf",
    "dataset": "digits",
    "clean": 0.95,
    "robust": {"inf": 0.61, "2": 0.42, "1": 0.18},
    "union": 0.15,
    "n": 120,
    "suite": "e-at",
    "eps": {"inf": "0.1", "2": "0.4", "1": "2"},
    "invalid_points": {"inf": 0, "1": 3},
    "seconds": 1.0,
}
TUNED = {
    **BASE,
    "name": "+ e-at",
    "clean": 0.925,
    "robust": {"inf": 0.55, "2": 0.6, "1": 0.5},
    "union": 0.4416666666666667,
    "run": "runs/x",
    "invalid_points": {"inf": 2},
    "curves": {
        "inf": {"radii": ["0.05", "0.1", "0.15"], "robust": [0.78, 0.55, 0.35], "attacked_points": [9, 30, 112], "invalid_points": 1}
    },
}
SANITY = [
    {
        "model": "digits-cnn-linf",
        "check": "more-steps",
        "norm": "inf",
        "passed": True,
        "detail": "61.0% at 10 steps, 61.0% at 20",
        "values": {},
    },
    {"model": "+ e-at", "check": "transfer", "norm": "1", "passed": False, "detail": "transfer broke <b>4</b> more & more", "values": {}},
]
CONFIG = """# robustft 0.1.0 fine-tuning run; repeat with --config, continue with --resume
model = "digits-cnn-linf"
scheme = "e-at"
norms = ["inf", "1"]
epochs = 2
lr = 0.05
device = "cpu"

[eps]
inf = "0.1"
1 = "2"

[attack_steps]
inf = 1
1 = 3

[provenance]
model = "default"
scheme = "default"
norms = "scheme e-at"
epochs = "option"
lr = "model digits-cnn-linf"
device = "option"
eps = "data set digits"
attack_steps = "config file 'my.toml' + option"
"""


def metrics_records() -> list[dict]:
    records = []
    for epoch in (1, 2):
        for batch in (1, 2, 3, 4):
            records.append(
                {
                    "kind": "batch",
                    "epoch": epoch,
                    "batch": batch,
                    "lr": 0.05,
                    "loss": 2.0 - 0.1 * (4 * (epoch - 1) + batch),
                    "norm": "inf",
                    "rerr_inf": 0.1 * batch,
                    "rerr_1": 0.2 * batch,
                }
            )
        records.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "loss": 1.5 / epoch,
                "seconds": 2.5 * epoch,
                "images": 64,
                "images_per_s": 64 / (2.5 * epoch),
                "attack_passes_per_s": 300.0,
                "peak_memory_mib": 100.0 * epoch,
                "nan_batches": 0,
                "probabilities": {"inf": 0.3 + 0.1 * epoch, "1": 0.7 - 0.1 * epoch},
            }
        )
    return records


def fake_run(folder: Path, *, evaluation: dict | None = None, records: list[dict] | None = None, info: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(
        json.dumps(
            {
                "base_model": "digits-cnn-linf",
                "dataset": "digits",
                "scheme": "e-at",
                "status": "finished",
                "norms": ["inf", "1"],
                "eps": {"inf": "0.1", "1": "2"},
                "robustft_version": "0.1.0",
                **(info or {}),
            }
        )
    )
    (folder / "config.toml").write_text(CONFIG)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (metrics_records() if records is None else records)))
    if evaluation is not None:
        (folder / "eval.json").write_text(json.dumps(evaluation))
    return folder


def evaluated_run(folder: Path) -> Path:
    return fake_run(
        folder,
        evaluation={
            "results": [BASE, TUNED],
            "settings": {"norms": ["inf", "2", "1"], "n_ex": 120, "steps": 10, "seed": 0, "suite": "e-at", "strict": False},
            "sanity": SANITY,
        },
    )


# ----------------------------------------------------------------------------------------- reading pages


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StrictPage(HTMLParser):
    """Fails on what a lenient browser would silently repair: an end tag that closes another element, an element
    left open, a self-closed non-void element, a repeated id. Collects the accuracy cells, the table rows and
    every src/href."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.cells: dict[tuple[str, str], tuple[float, str]] = {}  # (row, column) -> (data-value, text shown)
        self.rows: dict[str, list[list[str]]] = {}  # table class -> rows of cell texts
        self._row, self._span, self._text, self._table, self._cell = "", None, [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            if a["id"] in self.ids:
                self.errors.append(f"repeated id {a['id']!r}")
            self.ids.add(a["id"])
        self.links += [v for k, v in attrs if k in ("src", "href") and v is not None]
        if tag == "table":
            self._table.append(a.get("class", ""))
        elif tag == "tr":
            self._row = a.get("data-row", "")
            if self._table:
                self.rows.setdefault(self._table[-1], []).append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "span" and "data-value" in a:
            self._span, self._text = (self._row, a["data-column"], float(a["data-value"])), []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag not in VOID:
            self.errors.append(f"self-closed <{tag}/>")
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag of void element </{tag}>")
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else 'nothing'}>")
            return
        self.stack.pop()
        if tag == "span" and self._span is not None:
            row, column, value = self._span
            self.cells[(row, column)] = (value, "".join(self._text))
            self._span = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.rows[self._table[-1]][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table.pop()

    def handle_data(self, data):
        if self._span is not None:
            self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> StrictPage:
    page = StrictPage()
    page.feed(text)
    page.close()
    assert page.errors == [], page.errors[:5]
    assert page.stack == [], f"left open: {page.stack}"
    return page


EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


def assert_self_contained(text: str, page: StrictPage) -> None:
    assert not EXTERNAL.search(text)
    assert all(link.startswith(("#", "data:image/svg+xml;base64,")) for link in page.links), [link[:60] for link in page.links]
    lowered = text.lower()
    assert "<script" not in lowered and "<link" not in lowered and "@import" not in lowered and "url(" not in lowered


def report(capsys, monkeypatch, *args: str):
    result = cli_in_process(capsys, monkeypatch, "report", *args)
    assert result.returncode == 0, result.stderr
    return result


# ------------------------------------------------------------------------------------------------ pages


def test_the_page_holds_the_stored_evaluation_exactly(tmp_path, capsys, monkeypatch):
    run = evaluated_run(tmp_path / "run")
    result = report(capsys, monkeypatch, str(run))
    path = run / "report.html"
    assert Path(result.stdout.strip()).resolve() == path.resolve()
    text = path.read_text(encoding="utf-8")
    page = parse(text)
    assert_self_contained(text, page)
    for role, row in (("base", BASE), ("fine-tuned", TUNED)):
        expected = {"clean": row["clean"], **row["robust"], "union": row["union"]}
        for column, value in expected.items():
            shown_value, shown = page.cells[(role, column)]
            assert shown_value == value  # the exact number of eval.json
            assert shown.rstrip("*") == f"{100 * value:.1f}"
    assert page.cells[("fine-tuned", "1")][1] == "50.0" and page.cells[("base", "1")][1] == "18.0*"  # 3 invalid l1 points
    header = page.rows["accuracy"][0]
    assert header == ["model", "clean", "l-inf (0.1)", "l2 (0.4)", "l1 (2)", "union"]
    tuned = page.rows["accuracy"][2]
    assert tuned[0] == "+ e-at" and tuned[-1] == "44.2(+29.2)"  # the change against the base model, in points
    assert "120 digits test points, suite e-at" in text and "steps 10" in text


def test_the_page_counts_invalid_points_and_shows_the_sanity_checks(tmp_path, capsys, monkeypatch):
    run = evaluated_run(tmp_path / "run")
    page = parse(report(capsys, monkeypatch, str(run)) and (run / "report.html").read_text())
    validity = page.rows["validity"]
    assert validity[0] == ["model", "l-inf invalid points", "l2 invalid points", "l1 invalid points", "radius sweep invalid points"]
    assert validity[1:] == [["digits-cnn-linf", "0", "0", "3", "–"], ["+ e-at", "2", "0", "0", "1"]]
    text = (run / "report.html").read_text()
    assert "6 adversarial point(s) were invalid" in text
    sanity = page.rows["sanity"]
    assert sanity[1][:4] == ["digits-cnn-linf", "more-steps", "l-inf", "pass"]
    assert sanity[2][:4] == ["+ e-at", "transfer", "l1", "FAIL"]
    assert sanity[2][4] == "transfer broke <b>4</b> more & more"  # shown as text, not markup
    assert "transfer broke &lt;b&gt;4&lt;/b&gt; more &amp; more" in text
    assert "1 of 2 checks failed" in text


def test_the_page_holds_timings_memory_configuration_and_environment(tmp_path, capsys, monkeypatch):
    run = evaluated_run(tmp_path / "run")
    report(capsys, monkeypatch, str(run))
    text = (run / "report.html").read_text()
    page = parse(text)
    epochs = page.rows["epochs"]
    assert epochs[0] == ["epoch", "loss", "seconds", "images / s", "attack passes / s", "peak memory (MiB)", "skipped batches"]
    assert epochs[1:] == [["1", "1.5000", "2.50", "25.6", "300", "100", "0"], ["2", "0.7500", "5.00", "12.8", "300", "200", "0"]]
    assert "2 epoch(s), 3.75 s per epoch on average, 7.5 s in all. Peak memory 200 MiB" in text
    config = {row[0]: row[1:] for row in page.rows["config"][1:]}
    assert config["epochs"] == ["2", "option"] and config["lr"] == ["0.05", "model digits-cnn-linf"]
    assert config["eps"] == ["inf=0.1, 1=2", "data set digits"]
    assert config["attack_steps"] == ["inf=1, 1=3", "config file 'my.toml' + option"]
    assert "provenance" not in config
    environment = {row[0]: row[1:] for row in page.rows["environment"][1:]}
    assert environment["robustft"][0] == "0.1.0" and environment["device"][0] == "setting: cpu"
    assert environment["Python"] == ["not recorded", ".".join(map(str, sys.version_info[:3]))]
    import torch

    assert environment["torch"][1] in (torch.__version__, torch.__version__.split("+")[0])


@pytest.mark.parametrize("missing_matplotlib", [False, True])
def test_figures_are_embedded_or_replaced_by_one_sentence(missing_matplotlib, tmp_path, capsys, monkeypatch):
    run = evaluated_run(tmp_path / "run")
    if missing_matplotlib:
        for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    else:
        pytest.importorskip("matplotlib")
    result = report(capsys, monkeypatch, str(run), "--json")
    printed = json.loads(result.stdout)
    text = (run / "report.html").read_text()
    page = parse(text)
    images = [link for link in page.links if link.startswith("data:")]
    if missing_matplotlib:
        assert printed["figures"] == [] and images == []
        assert text.count("The figures need matplotlib, which is not installed: pip install &#x27;robustft[plot]&#x27;.") == 3
        assert "warning: The figures need matplotlib" in result.stderr
        assert page.cells[("fine-tuned", "union")][0] == TUNED["union"]  # the numbers are all still there
    else:
        assert printed["figures"] == ["bars", "curves", "training"] and len(images) == 3
        for image in images:
            svg = base64.b64decode(image.split(",", 1)[1])
            assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg[:2000]
        assert "0.05: 78.0 (9); 0.1: 55.0 (30); 0.15: 35.0 (112)" in text  # the radius sweep, also as numbers
    assert printed["report"] == str(run / "report.html") and printed["evaluated"] is True


def test_a_run_without_an_evaluation_gets_a_page_saying_how_to_evaluate_it(tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "my run")
    result = report(capsys, monkeypatch, str(run), "--json")
    assert json.loads(result.stdout)["evaluated"] is False
    text = (run / "report.html").read_text()
    page = parse(text)
    assert "This run has not been evaluated. Evaluate it with <code>robustft eval --run &#x27;" + str(run) + "&#x27;</code>" in text
    assert "accuracy" not in page.rows and ("base", "clean") not in page.cells
    assert "epochs" in page.rows  # the training part is still there


def test_an_evaluation_of_other_weights_is_named_on_the_page_and_warned_about(tmp_path, capsys, monkeypatch):
    run = evaluated_run(tmp_path / "run")
    stored = json.loads((run / "eval.json").read_text())
    (run / "eval.json").write_text(json.dumps({**stored, "weights_sha256": "a" * 64}))
    (run / "model.pt.sha256").write_text("b" * 64 + "  model.pt\n")  # the run trained on after its evaluation
    result = report(capsys, monkeypatch, str(run))
    text = (run / "report.html").read_text()
    assert "is of other weights than the run&#x27;s model.pt" in text and "accuracy" not in parse(text).rows
    assert "warning: The stored evaluation" in result.stderr


def test_every_string_from_the_files_is_escaped(tmp_path, capsys, monkeypatch):
    evil = '<script>alert("x")</script>'
    row = {**TUNED, "name": '<img src="http://x/y.png">', "dataset": evil}
    run = fake_run(tmp_path / "run", evaluation={"results": [BASE, row]}, info={"base_model": evil, "started": "</dd></dl>"})
    with (run / "config.toml").open("a") as handle:
        handle.write('\n[options]\nnote = "</td><script>x</script>"\n')
    report(capsys, monkeypatch, str(run))
    text = (run / "report.html").read_text()
    page = parse(text)  # still well formed: the injected end tags are text
    assert_self_contained(text, page)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text and "&lt;img src=&quot;http://x/y.png&quot;&gt;" in text
    assert page.rows["accuracy"][2][0] == row["name"]


def test_a_comparison_adds_its_table_and_figures(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    run = evaluated_run(tmp_path / "run")
    folder = tmp_path / "cmp"
    eval_settings = {"norms": ["inf", "1"], "eps": {"inf": "0.1", "1": "2"}, "n_ex": 24, "steps": 2, "suite": "e-at"}
    folder.mkdir()
    (folder / "compare.json").write_text(json.dumps({"schemes": ["e-at"], "seeds": [0, 1], "finetune": {}, "eval": eval_settings}))
    (folder / "base-eval.json").write_text(json.dumps({"settings": eval_settings, "result": BASE}))
    for seed, (union, seconds) in enumerate(((0.4, 2.0), (0.5, 3.0))):
        seed_run = folder / f"e-at-seed{seed}"
        seed_run.mkdir()
        (seed_run / "compare-eval.json").write_text(json.dumps({"settings": eval_settings, "result": {**TUNED, "union": union}}))
        (seed_run / "metrics.jsonl").write_text(
            json.dumps({"kind": "epoch", "epoch": 1, "seconds": seconds, "images": 32, "passes": {"attack_forward": 320}}) + "\n"
        )
    out = tmp_path / "pages"
    out.mkdir()
    result = report(capsys, monkeypatch, str(run), "--compare", str(folder), "--out", str(out), "--json")
    printed = json.loads(result.stdout)
    assert printed["report"] == str(out / "report.html") and not (run / "report.html").exists()
    assert printed["figures"] == ["bars", "curves", "training", "compare-union", "compare-cost"]
    page = parse((out / "report.html").read_text())
    rows = page.rows["compare"]
    assert rows[0] == ["model", "clean", "l-inf (0.1)", "l1 (2)", "union", "s / epoch", "passes / image"]  # the comparison's norms
    assert rows[1] == ["digits-cnn-linf", "95.0", "61.0", "18.0", "15.0", "–", "–"]
    assert rows[2] == [
        "+ e-at",
        "92.5 ± 0.0",
        "55.0 ± 0.0",
        "50.0 ± 0.0",
        "45.0 ± 7.1",
        "2.50 ± 0.71",
        "10.0",
    ]  # mean ± sample std over the seeds


@pytest.mark.parametrize(
    "argv,message,code",
    [
        (["report", "MISSING"], "Run folder 'MISSING' does not exist.", 1),
        (["report", "NOTRUN"], "is not a robustft run folder (it has no run.json).", 1),
        (["report", "RUN", "--compare", "NOTRUN"], "is not a robustft compare folder (it has no compare.json).", 1),
        (["report", "RUN", "--out", "FILE/report.html"], "cannot be written", 1),
    ],
)
def test_report_mistakes_are_one_sentence(argv, message, code, tmp_path, capsys, monkeypatch):
    files = {"MISSING": tmp_path / "missing", "NOTRUN": tmp_path / "notrun", "RUN": tmp_path / "run", "FILE": tmp_path / "file"}
    files["NOTRUN"].mkdir()
    files["FILE"].write_text("a file, not a folder")
    fake_run(files["RUN"])
    args = [str(files[a.split("/")[0]]) + a[len(a.split("/")[0]) :] if a.split("/")[0] in files else a for a in argv]
    result = cli_in_process(capsys, monkeypatch, *args)
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message.replace("MISSING", str(files["MISSING"])) in lines[0], (
        result.stderr
    )
    assert not list(tmp_path.rglob("report.html"))


def test_the_same_files_give_the_same_page(tmp_path):
    from robustft.html_report import render_report

    run = evaluated_run(tmp_path / "run")
    assert render_report(run).html == render_report(run).html


# ---------------------------------------------------------------------------------------------- browser


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


class HeadlessBrowser:
    """A headless Chromium driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``: file
    descriptors 3 and 4, NUL-separated JSON), so no port is opened and no package is needed."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser, from_browser = os.pipe(), os.pipe()

        def child() -> None:  # the protocol's fixed descriptors: 3 to read commands, 4 to write answers
            read, write = fcntl.fcntl(to_browser[0], fcntl.F_DUPFD, 10), fcntl.fcntl(from_browser[1], fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=child,
            pass_fds=(3, 4),
        )
        os.close(to_browser[0])
        os.close(from_browser[1])
        self.write, self.read = to_browser[1], from_browser[0]
        self.buffer, self.last_id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Log", "Runtime"):
            self.send(f"{domain}.enable", session=True)

    def _receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read], [], [], left)[0]:
                raise TimeoutError("the browser did not answer")
            chunk = os.read(self.read, 1 << 20)
            if not chunk:
                raise EOFError("the browser closed its pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message

    def send(self, method: str, params: dict | None = None, *, session: bool = False, timeout: float = 60) -> dict:
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params or {}, **({"sessionId": self.session} if session else {})}
        os.write(self.write, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive(timeout)
            if answer.get("id") == self.last_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def open(self, path: Path) -> None:
        self.send("Page.navigate", {"url": path.resolve().as_uri()}, session=True)
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            self._receive(60)

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=True)["result"].get("value")

    def console_errors(self) -> list[str]:
        """Error entries of the page's console: failed loads, blocked requests, exceptions, console.error."""
        errors = [
            e["params"]["entry"]["text"]
            for e in self.events
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]
        errors += [str(e["params"]["exceptionDetails"].get("text")) for e in self.events if e["method"] == "Runtime.exceptionThrown"]
        errors += [
            str(e["params"]["args"]) for e in self.events if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] == "error"
        ]
        return errors

    def screenshot(self, width: int = 1000) -> bytes:
        """The whole page as PNG, ``width`` CSS pixels wide."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.send(
            "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True
        )
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=True)
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self.write)
        os.close(self.read)


@pytest.fixture
def browser(tmp_path):
    executable = find_browser()
    if executable is None:
        pytest.skip(f"no Chromium-family browser on PATH ({', '.join(BROWSERS)}): the page is checked by the HTML parser only")
    opened = HeadlessBrowser(executable, tmp_path / "profile")
    yield opened
    opened.close()


def test_the_browser_catches_a_missing_file(tmp_path, browser):
    """The check below can fail: a page that loads a file that is not there is a console error."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><p>x</p><img src="missing.png" alt=""></body></html>')
    browser.open(page)
    time.sleep(0.2)  # the failed load is reported just after the load event
    assert any("Failed to load resource" in e for e in browser.console_errors())


def test_a_real_browser_renders_the_page_without_console_errors(tmp_path, capsys, monkeypatch, browser):
    pytest.importorskip("matplotlib")
    run = evaluated_run(tmp_path / "run")
    report(capsys, monkeypatch, str(run))
    browser.open(run / "report.html")
    time.sleep(0.2)
    assert browser.console_errors() == []
    table = browser.evaluate("document.querySelector('table.accuracy').innerText")
    assert "+ e-at" in table and "44.2" in table and "92.5" in table
    assert browser.evaluate("document.querySelector('table.accuracy').getBoundingClientRect().height") > 50
    drawn = browser.evaluate("[...document.images].map(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 200)")
    assert drawn == [True, True, True]  # bars, radius curves, training curves: decoded and laid out
    assert browser.evaluate("performance.getEntriesByType('resource').length") == 0  # nothing fetched
    png = browser.screenshot()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


# --------------------------------------------------------------------------------------------- for real


@pytest.mark.slow
def test_a_real_run_gets_a_page_with_its_evaluation(base_model, tmp_path, capsys, monkeypatch):
    def cli(*args: str):
        result = cli_in_process(capsys, monkeypatch, *args)
        assert result.returncode == 0, result.stderr
        return result

    run = tmp_path / "run"
    cli("finetune", "--epochs", "1", "--n-train", "64", "--attack-steps", "2", "--out", str(run), "--quiet")
    cli("eval", "--run", str(run), "--norms", "1,inf", "--n-ex", "24", "--steps", "3", "--quiet")
    cli("report", str(run))
    stored = json.loads((run / "eval.json").read_text())
    text = (run / "report.html").read_text()
    page = parse(text)
    assert f"SHA-256 <code>{stored['weights_sha256'][:16]}…</code>, the run's current <code>model.pt</code>" in text
    base, tuned = stored["results"]
    for role, row in (("base", base), ("fine-tuned", tuned)):
        for column, value in {"clean": row["clean"], **row["robust"], "union": row["union"]}.items():
            assert page.cells[(role, column)][0] == value
    epochs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r.get("kind") == "epoch"]
    assert page.rows["epochs"][1][2] == f"{epochs[0]['seconds']:.2f}"
    config = {row[0]: row[1:] for row in page.rows["config"][1:]}
    assert config["epochs"] == ["1", "option"] and config["n_train"] == ["64", "option"]
