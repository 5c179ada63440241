"""`layerseg compare --html`: one self-contained page, checked by an HTML parser everywhere and rendered in headless
Chromium where it is installed (Debian's `chromium`)."""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error
from PIL import Image

from layerseg_merge.cli import main

CLASSES = ("road", "sky", "car")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def semantic_report(seed: int, images: int = 4, data: str = "folder:/data/target") -> dict:
    """A report as `layerseg eval --out` writes it, with seeded numbers and a provenance entry."""
    rng = np.random.default_rng(seed)
    iou = rng.uniform(0.2, 0.9, len(CLASSES))
    per_class = {name: {"IoU": float(v), "Acc": float(min(1.0, v + 0.05))} for name, v in zip(CLASSES, iou)}
    return {"mIoU": float(iou.mean()), "aAcc": float(rng.uniform(0.7, 0.95)), "mAcc": float(iou.mean() + 0.05),
            "per_class": per_class,
            "provenance": {"model": {"path": f"models/m{seed}", "weights": {"model.safetensors": f"{seed:064x}"}},
                           "data": {"spec": data, "kind": "folder", "split": None, "images": images},
                           "classes": {"averaged": list(CLASSES), "subset": None},
                           "pipeline": {"device": "cpu", "amp": "off", "batch_size": 4, "slide": None,
                                        "preprocessing": "device", "mmseg": None},
                           "versions": {"layerseg-merge": "0.1.0"}, "date": "2025-01-01T00:00:00+00:00"}}


def painted(folder: Path, names: list[str], seed: int) -> Path:
    """A --show-dir folder as eval/painting.py writes it: a PNG per image (here seeded noise) and index.json."""
    rng = np.random.default_rng(seed)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / name)
    images = [{"name": str(Path(name).with_suffix(".jpg")), "file": name} for name in names]
    (folder / "index.json").write_text(json.dumps({"model": "m", "images": images}))
    return folder


def write_reports(tmp_path: Path, names=("a/img0.png", "a/img1.png", "b/img2.png"), paint=(True, False, True)):
    """Three reports: the first and the last with painted images (the last missing one), the second without."""
    paths = []
    for seed, (label, with_images) in enumerate(zip(("source", "dacs", "merged"), paint)):
        report = semantic_report(seed)
        if with_images:
            shown = names if label != "merged" else names[:-1]
            report["provenance"]["show_dir"] = str(painted(tmp_path / f"{label}_show", list(shown), seed))
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(report))
        paths.append(path)
    return paths


class Page(HTMLParser):
    """Tags, attributes and text of a page."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        if data.strip():
            self.text.append(data.strip())


def parsed(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_the_page_is_one_file_that_references_nothing_outside_itself(tmp_path):
    paths = write_reports(tmp_path)
    out = tmp_path / "page" / "report.html"
    result = CliRunner().invoke(main, ["compare", *map(str, paths), "--html", str(out), "--delta-to", "dacs"])
    assert result.exit_code == 0, result.output
    page = parsed(out)
    assert ("meta", {"name": "viewport", "content": "width=device-width, initial-scale=1"}) in page.tags
    references = [(tag, name, value) for tag, attrs in page.tags for name, value in attrs.items()
                  if name in ("src", "href", "srcset", "data", "action", "poster")]
    for tag, name, value in references:
        assert value.startswith("data:image/"), (tag, name, value[:60])
    assert not {tag for tag, _ in page.tags} & {"link", "iframe", "object", "embed"}
    assert all(attrs.get("src") is None for tag, attrs in page.tags if tag == "script")  # inline scripts only
    text = out.read_text()
    assert "http:" not in text and "https:" not in text and "url(" not in text and "@import" not in text
    # every embedded image decodes to the painted file it shows (2 models x 3 names, less the one not painted)
    images = [attrs for tag, attrs in page.tags if tag == "img" and attrs.get("src")]
    assert len(images) == 5
    for attrs in images:
        label, name = attrs["alt"].split(": ")  # the image's name in the dataset; the file is the painted PNG
        data = base64.b64decode(attrs["src"].split(",", 1)[1])
        assert data == (tmp_path / f"{label}_show" / name).with_suffix(".png").read_bytes()
    words = " ".join(page.text)
    assert "not painted" in words and "dacs" in words
    assert "Measured on folder:/data/target (read whole, 4 images)." in words  # the same data for all
    # the headline table: values in percent, the differences to the reference (dacs) signed and coloured
    reports = {p.stem: json.loads(p.read_text()) for p in paths}
    delta = 100 * (reports["merged"]["mIoU"] - reports["dacs"]["mIoU"])
    assert f"{100 * reports['merged']['mIoU']:.2f}" in words and f"{delta:+.2f}" in words
    colour = "up" if delta > 0 else "down"
    assert any(tag == "td" and attrs.get("class") == colour for tag, attrs in page.tags)
    for name in CLASSES:
        assert name in page.text


def test_the_page_spreads_the_images_and_says_when_data_differ(tmp_path):
    names = [f"img{i:02d}.png" for i in range(10)]
    paths = write_reports(tmp_path, names, paint=(True, True, True))
    report = json.loads(paths[1].read_text())
    report["provenance"]["data"]["images"] = 8
    paths[1].write_text(json.dumps(report))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["compare", *map(str, paths), "--html", str(out), "--images", "3"])
    assert result.exit_code == 0, result.output
    page = parsed(out)
    shown = sorted({attrs["alt"].split(": ")[1] for tag, attrs in page.tags if tag == "img" and attrs.get("src")})
    assert shown == ["img00.jpg", "img04.jpg", "img09.jpg"]  # first, middle, last of those painted
    assert any("number of images differ (source: 4; dacs: 8; merged: 4)" in text for text in page.text)
    assert not any(text.startswith("Measured on") for text in page.text)


def test_the_page_finds_a_moved_show_dir_beside_its_report_and_skips_a_lost_one(tmp_path):
    paths = write_reports(tmp_path / "run")
    moved = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", moved)
    shutil.rmtree(tmp_path / "run")
    (moved / "merged_show").rename(moved / "elsewhere")  # the merged model's images are lost
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["compare", *(str(moved / p.name) for p in paths), "--html", str(out)])
    assert result.exit_code == 0, result.output
    page = parsed(out)
    assert {attrs["alt"].split(": ")[0] for tag, attrs in page.tags if tag == "img" and attrs.get("src")} == {
        "source"}
    assert any("Painted images not found: merged" in text for text in page.text)


def test_the_page_is_not_written_into_an_input(tmp_path):
    paths = write_reports(tmp_path)
    for inside in (paths[0], tmp_path / "source_show" / "page.html"):
        assert_one_line_error(CliRunner().invoke(main, ["compare", *map(str, paths), "--html", str(inside)]),
                              f"{inside} would be written inside the input")
    assert json.loads(paths[0].read_text())["mIoU"]  # untouched
    assert not (tmp_path / "source_show" / "page.html").exists()


def test_the_page_shows_what_eval_show_dir_painted(tmp_path, segformers):
    """The contract with eval/painting.py, end to end: eval --show-dir records its folder, compare --html finds it."""
    from eval_data import semantic_folder

    from layerseg_merge.eval import painting, report_page

    assert report_page.INDEX == painting.INDEX
    data = semantic_folder(tmp_path / "data", count=3)
    reports = []
    for index in (0, 1):  # two evaluations of one model, each painting its own folder
        out = tmp_path / f"m{index}.json"
        result = CliRunner().invoke(main, ["eval", str(segformers[0]), "--data", f"folder:{data}", "--workers",
                                           "0", "--device", "cpu", "--out", str(out), "--show-dir",
                                           str(tmp_path / f"show{index}"), "--show", "2"])
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["provenance"]["show_dir"] == str(tmp_path / f"show{index}")
        reports.append(str(out))
    page_path = tmp_path / "page.html"
    assert CliRunner().invoke(main, ["compare", *reports, "--html", str(page_path)]).exit_code == 0
    index = json.loads((tmp_path / "show0" / "index.json").read_text())["images"]
    images = [attrs for tag, attrs in parsed(page_path).tags if tag == "img" and attrs.get("src")]
    assert len(images) == 2 * len(index) == 4
    for attrs in images:
        label, name = attrs["alt"].split(": ")
        (entry,) = [e for e in index if e["name"] == name]
        folder = tmp_path / ("show0" if label == "m0" else "show1")
        assert base64.b64decode(attrs["src"].split(",", 1)[1]) == (folder / entry["file"]).read_bytes()


def test_a_large_painted_image_is_embedded_as_a_jpeg_of_the_same_size(tmp_path, monkeypatch):
    from layerseg_merge.eval import report_page

    path = painted(tmp_path, ["big.png"], 3) / "big.png"
    monkeypatch.setattr(report_page, "EMBED_AS_IS", path.stat().st_size - 1)
    uri = report_page.data_uri(path)
    assert uri.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))) as image:
        assert image.format == "JPEG" and image.size == (32, 24)


def test_compare_with_a_page_imports_no_torch(tmp_path):
    paths = write_reports(tmp_path)
    script = ("import json, sys; from layerseg_merge.cli import main\n"
              "try:\n    main(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
              "print(json.dumps([m for m in ('torch', 'mergekit', 'transformers') if m in sys.modules]))")
    result = subprocess.run([sys.executable, "-c", script, "compare", *map(str, paths), "--per-class", "--delta-to",
                             "--format", "latex", "--html", str(tmp_path / "r.html")], capture_output=True, text=True)
    assert result.returncode == 0 and (tmp_path / "r.html").is_file(), result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []


# ------------------------------------------------------------------------------ a real browser


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: file
    descriptors 3 and 4, messages ended by NUL), standard library only. Network names resolve nowhere."""

    def __init__(self, profile: Path):
        commands, self._to_chromium = os.pipe()
        self._from_chromium, replies = os.pipe()
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND", "about:blank"],
            pass_fds=(3, 4), preexec_fn=lambda: (os.dup2(commands, 3), os.dup2(replies, 4)),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands)
        os.close(replies)
        self.events: list[dict] = []
        self._buffer = b""
        self._id = 0

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._from_chromium, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params} | ({"sessionId": session} if session else {})
        os.write(self._to_chromium, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def open(self, url: str, width: int, height: int, mobile: bool = False) -> str:
        """A tab at ``width`` x ``height`` CSS pixels showing ``url``, loaded; returns its session."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable", session)
        self.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height, deviceScaleFactor=1,
                  mobile=mobile)
        self.call("Page.navigate", session, url=url)
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session
                      for e in self.events):
            self.events.append(self._read())
        return session

    def evaluate(self, session: str, expression: str):
        return self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"]["value"]

    def problems(self) -> list[str]:
        """Failed loads, requests that left the file, script errors and console errors, as seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.loadingFailed":
                found.append(f"failed to load: {params.get('errorText')}")
            elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith(("data:",
                                                                                                    "file:")):
                found.append(f"request: {params['request']['url']}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"script error: {params['exceptionDetails'].get('text')}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(f"log: {params['entry']['text']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append("console error")
        return found

    def screenshot(self, session: str) -> bytes:
        """The whole page as a PNG."""
        data = self.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)["data"]
        return base64.b64decode(data)

    def close(self) -> None:
        try:
            self.call("Browser.close")
        finally:
            self.process.wait(timeout=30)


@pytest.fixture()
def chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); the page is checked by the "
                    "HTML parser tests only")
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(Path(profile))
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.parametrize("width,height,mobile", [(1366, 768, False), (390, 844, True)])  # a laptop, a phone
def test_the_page_renders_in_chromium_without_a_failed_load(tmp_path, chromium, width, height, mobile):
    paths = write_reports(tmp_path)
    out = tmp_path / "report.html"
    assert CliRunner().invoke(main, ["compare", *map(str, paths), "--html", str(out)]).exit_code == 0
    session = chromium.open(out.as_uri(), width, height, mobile)
    text = chromium.evaluate(session, "document.body.innerText")
    for expected in ("Segmentation results: 3 models", "source", "dacs", "merged", "road", "What was measured",
                     "not painted"):
        assert expected in text
    assert chromium.problems() == []
    # every image decoded; no element wider than the screen but inside a table that scrolls sideways
    assert chromium.evaluate(session, "[...document.images].filter(i => i.src && !i.naturalWidth).length") == 0
    assert chromium.evaluate(session, "document.images.length") == 6  # 5 painted + the enlarge dialog's
    overflow = chromium.evaluate(session, """[...document.querySelectorAll('main > *')]
        .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1).length""")
    assert overflow == 0
    # click to enlarge: the dialog opens showing the image clicked
    shown = chromium.evaluate(session, """(() => { const img = document.querySelector('figure img'); img.click();
        const dialog = document.getElementById('zoom');
        return [dialog.open, dialog.querySelector('img').src === img.src]; })()""")
    assert shown == [True, True]
    assert chromium.problems() == []


def test_a_page_with_a_missing_image_would_be_caught(tmp_path, chromium):
    """The browser check itself: a page whose image is not there reports a failed load."""
    out = tmp_path / "broken.html"
    out.write_text('<!doctype html><html><body><p>text</p><img src="gone.png"></body></html>')
    session = chromium.open(out.as_uri(), 800, 600)
    assert chromium.evaluate(session, "document.body.innerText") == "text"
    assert any(p.startswith("failed to load") for p in chromium.problems())
