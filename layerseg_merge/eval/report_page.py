"""The report page of ``layerseg compare --html``: one self-contained HTML file comparing evaluation reports.

It holds the headline table (the report metrics of :mod:`layerseg_merge.eval.report_metrics`), the per-class
results with each model's differences to the reference coloured, per-class bars, the painted predictions the
evaluations wrote (``eval --show-dir``) side by side across the models (click to enlarge) and what each report
measured (its provenance). Images are embedded as data URIs and the styles and the few lines of script are inline:
the page needs no network and no other file. Plain CSS that reflows from a laptop screen to a phone's.

Painted images are found through the report: its ``provenance.show_dir`` names the folder ``eval --show-dir`` wrote,
whose ``index.json`` (:mod:`layerseg_merge.eval.painting`) lists each image's ``name`` in the dataset and its
``file`` in the folder; the same name is the same input image for every model. The folder is looked up where it
was written, else beside the report (an experiment folder copied elsewhere).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
from pathlib import Path

from layerseg_merge.eval.report_metrics import task_of
from layerseg_merge.eval.reports import Comparison, comparison

MODEL_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#bab0ac")
INDEX = "index.json"  # what eval/painting.py calls its list of painted images (that module imports torch)
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}
EMBED_AS_IS = 1_500_000  # bytes; a larger painted image is embedded as a JPEG (quality 90) of the same size

STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --head: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--fg); background: #fff; }
main { max-width: 1200px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.5rem; margin: 0.2em 0; } h2 { font-size: 1.2rem; margin: 1.6em 0 0.5em; }
p.meta, .note { color: var(--muted); font-size: 0.9rem; }
.warning { border-left: 4px solid #d4a72c; background: #fff8c5; padding: 8px 12px; }
.scroll { overflow-x: auto; -webkit-overflow-scrolling: touch; border: 1px solid var(--line); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
th:first-child, td:first-child { text-align: left; position: sticky; left: 0; background: var(--head); }
td.ref { font-weight: 600; }
.delta { display: block; font-size: 0.8em; }
.up { background: rgba(26, 127, 55, var(--a)); } .down { background: rgba(209, 36, 47, var(--a)); }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px; margin-right: 4px;
          vertical-align: -0.05em; }
.legend span { margin-right: 14px; white-space: nowrap; }
.bars { display: grid; grid-template-columns: minmax(90px, 200px) 1fr; gap: 2px 10px; align-items: center; }
.bars .name { font-size: 0.9rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bars .group { padding: 4px 0; border-bottom: 1px solid var(--line); }
.barrow { display: flex; align-items: center; gap: 6px; margin: 2px 0; font-size: 11px; }
.track { flex: 1; } .bar { height: 12px; border-radius: 2px; min-width: 1px; }
.barrow span { width: 3.2em; text-align: right; color: var(--muted); font-variant-numeric: tabular-nums; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(220px, 1fr)); gap: 10px; margin-bottom: 18px; }
figure { margin: 0; } figure img { width: 100%; height: auto; display: block; cursor: zoom-in;
                                   border: 1px solid var(--line); border-radius: 4px; }
figcaption { font-size: 0.85rem; color: var(--muted); } .missing { color: var(--muted); font-style: italic; }
dialog { max-width: 96vw; max-height: 96vh; padding: 6px; border: 0; border-radius: 6px; }
dialog img { max-width: calc(96vw - 12px); max-height: calc(96vh - 48px); display: block; cursor: zoom-out; }
dialog::backdrop { background: rgba(0, 0, 0, 0.75); }
code { font-size: 0.85em; word-break: break-all; white-space: normal; }
@media (max-width: 600px) { main { padding: 10px; } th, td { padding: 5px 6px; } body { font-size: 14px; }
                            .bars { grid-template-columns: 1fr; } .bars .group { border-bottom: 0; } }
"""

SCRIPT = """
const zoom = document.getElementById("zoom");
function enlarge(img) {
  zoom.querySelector("img").src = img.src;
  zoom.querySelector("p").textContent = img.alt;
  zoom.showModal();
}
document.querySelectorAll("figure img").forEach(img => {
  img.addEventListener("click", () => enlarge(img));
  img.addEventListener("keydown", event => { if (event.key === "Enter") enlarge(img); });
});
zoom.addEventListener("click", () => zoom.close());
"""


def _text(value) -> str:
    return html.escape(str(value))


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _cell(value: float | None, delta: float | None, reference: bool = False) -> str:
    """A table cell: the value in percent; for a model other than the reference its difference in points, the
    background green (better) or red (worse), stronger up to 10 points."""
    if delta is None:
        return f"<td{' class=ref' if reference else ''}>{_pct(value)}</td>"
    strength = 0.12 + 0.5 * min(abs(delta) / 10, 1.0)
    kind = "up" if delta > 0 else "down" if delta < 0 else ""
    style = f' style="--a:{strength:.2f}"' if kind else ""
    return f'<td class="{kind}"{style}>{_pct(value)}<span class="delta">{delta:+.2f}</span></td>'


def _table(header: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{_text(name)}</th>" for name in header)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def headline_table(compared: Comparison) -> str:
    """A row per model, a column per report metric."""
    rows = []
    for label, values in compared.rows.items():
        deltas = compared.deltas(label) or [None] * len(values)
        cells = "".join(_cell(v, d, label == compared.reference) for v, d in zip(values, deltas))
        rows.append(f"<tr><td>{_text(label)}</td>{cells}</tr>")
    return _table(["model", *compared.columns], rows)


def class_table(compared: Comparison) -> str:
    """A row per class (a phone scrolls down, not sideways), a column per model."""
    labels = list(compared.rows)
    deltas = {label: compared.deltas(label) or [None] * len(compared.columns) for label in labels}
    rows = [f"<tr><td>{_text(column)}</td>"
            + "".join(_cell(compared.rows[label][index], deltas[label][index], label == compared.reference)
                      for label in labels) + "</tr>"
            for index, column in enumerate(compared.columns)]
    return _table(["class", *labels], rows)


def bar_chart(compared: Comparison, colours: dict[str, str]) -> str:
    """Per class, a bar per model (CSS widths: it reflows with the page)."""
    legend = "".join(f'<span><i class="swatch" style="background:{colours[label]}"></i>{_text(label)}</span>'
                     for label in compared.rows)
    groups = []
    for index, column in enumerate(compared.columns):
        bars = []
        for label, values in compared.rows.items():
            value = values[index]
            width = 0 if value is None else max(0.0, min(1.0, value)) * 100
            bars.append(f'<div class="barrow" title="{_text(label)}: {_pct(value)}"><div class="track">'
                        f'<div class="bar" style="width:{width:.1f}%;background:{colours[label]}"></div></div>'
                        f"<span>{_pct(value)}</span></div>")
        groups.append(f'<div class="name" title="{_text(column)}">{_text(column)}</div>'
                      f'<div class="group">{"".join(bars)}</div>')
    return f'<p class="legend">{legend}</p><div class="bars">{"".join(groups)}</div>'


def painted_images(report: dict, source: Path) -> tuple[Path | None, dict[str, Path]]:
    """The folder and the ``image name -> file`` of the predictions painted by the evaluation behind ``report`` (read
    from ``source``); (None, {}) when it painted none, (the folder, {}) when its folder or list is not found."""
    shown = (report.get("provenance") or {}).get("show_dir")
    if not isinstance(shown, str):
        return None, {}
    recorded = Path(shown)
    candidates = [recorded if recorded.is_absolute() else source.parent / recorded, source.parent / recorded.name]
    folder = next((c for c in candidates if (c / INDEX).is_file()), None)
    if folder is None:
        return recorded, {}
    try:
        entries = json.loads((folder / INDEX).read_text(encoding="utf-8"))["images"]
        return folder, {str(entry["name"]): folder / str(entry["file"]) for entry in entries}
    except (OSError, ValueError, KeyError, TypeError):
        return folder, {}


def spread(names: list[str], count: int) -> list[str]:
    """``count`` of ``names`` spread evenly over them (all when there are no more)."""
    if count >= len(names):
        return names
    if count <= 1:
        return names[:count]
    return [names[i * (len(names) - 1) // (count - 1)] for i in range(count)]


def data_uri(path: Path) -> str | None:
    """The image as a data URI (a large one as a JPEG of the same size); None when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if kind is None or len(data) > EMBED_AS_IS:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as image:
                buffer = io.BytesIO()
                image.convert("RGB").save(buffer, format="JPEG", quality=90)
        except OSError:
            return None
        data, kind = buffer.getvalue(), "image/jpeg"
    return f"data:{kind};base64,{base64.b64encode(data).decode('ascii')}"


def image_rows(painted: dict[str, dict[str, Path]], count: int) -> str:
    """For each of ``count`` image names (spread over those written), the models' painted images side by side."""
    names = spread(sorted({name for files in painted.values() for name in files}), count)
    rows = []
    for name in names:
        figures = []
        for label, files in painted.items():
            uri = data_uri(files[name]) if name in files else None
            body = (f'<img src="{uri}" alt="{_text(label)}: {_text(name)}" tabindex="0">' if uri else
                    '<p class="missing">not painted</p>')
            figures.append(f"<figure>{body}<figcaption>{_text(label)}</figcaption></figure>")
        rows.append(f'<h3 class="note"><code>{_text(name)}</code></h3><div class="row">{"".join(figures)}</div>')
    return "".join(rows)


def _short(digests: dict | None) -> str:
    if not digests:
        return "n/a (weights given in memory)" if digests is None else "n/a"
    return "<br>".join(f'{_text(name)}: <code title="{_text(value)}">{_text(value[:16])}</code>'
                       for name, value in digests.items())


def provenance_table(reports: dict[str, dict]) -> str:
    """What each report measured, a column per model (reports written before provenance say so)."""
    def field(report: dict, *keys):
        value = report.get("provenance") or {}
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    def pipeline(report: dict) -> str:
        p = field(report, "pipeline") or {}
        if not p:
            return "n/a"
        parts = [f"{p.get('device')}", f"amp {p.get('amp')}", f"batch {p.get('batch_size')}",
                 f"preprocessing: {p.get('preprocessing')}"]
        if p.get("slide"):
            parts.append("slide {},{}".format(*p["slide"]))
        if (p.get("mmseg") or {}).get("test_pipeline"):
            parts.append(f"mmseg img_scale {p['mmseg']['test_pipeline'].get('img_scale')}")
        return ", ".join(_text(part) for part in parts)

    fields = {
        "model": lambda r: f"<code>{_text(field(r, 'model', 'path') or 'n/a')}</code>",
        "weights (sha256)": lambda r: _short(field(r, "model", "weights")) if field(r, "model") else "n/a",
        "data": lambda r: f"<code>{_text(field(r, 'data', 'spec') or 'n/a')}</code>",
        "split": lambda r: _text(field(r, "data", "split") or ("read whole" if field(r, "data") else "n/a")),
        "images": lambda r: _text(field(r, "data", "images") or "n/a"),
        "classes averaged": lambda r: _text(len(field(r, "classes", "averaged") or []) or "n/a"),
        "pipeline": pipeline,
        "versions": lambda r: _text(", ".join(f"{k} {v}" for k, v in (field(r, "versions") or {}).items() if v)
                                    or "n/a"),
        "date": lambda r: _text(field(r, "date") or "n/a"),
    }
    rows = [f"<tr><td>{_text(name)}</td>" + "".join(f'<td style="text-align:left;white-space:normal">{show(r)}</td>'
                                                  for r in reports.values()) + "</tr>"
            for name, show in fields.items()]
    return _table(["", *reports], rows)


def differences_in_data(reports: dict[str, dict]) -> list[str]:
    """What the reports' provenance shows was measured differently (data, split, image count, classes averaged)."""
    found = []
    for what, keys in (("data", ("data", "spec")), ("split", ("data", "split")),
                       ("number of images", ("data", "images")), ("classes averaged", ("classes", "averaged"))):
        seen = {}
        for label, report in reports.items():
            value = report.get("provenance")
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            if value is not None:
                seen[label] = value
        if len({repr(v) for v in seen.values()}) > 1:
            shown = "; ".join(f"{label}: {len(v) if what == 'classes averaged' else v}" for label, v in seen.items())
            found.append(f"{what} differ ({shown})")
    return found


def page(reports: dict[str, dict], sources: dict[str, Path], reference: str, images: int = 6,
         version: str | None = None) -> str:
    """The report page: ``reports`` by label (in order), read from ``sources``; differences to ``reference``;
    ``images`` painted images per model at most (0: none)."""
    colours = {label: MODEL_COLOURS[i % len(MODEL_COLOURS)] for i, label in enumerate(reports)}
    task = task_of(next(iter(reports.values())))
    metric = "PQ per category" if task == "panoptic" else "IoU per class"
    headlines = comparison(reports, reference=reference)
    classes = comparison(reports, per_class=True, reference=reference)  # the classes, then mIoU (PQ)
    bars = Comparison(classes.columns[:-1], {label: values[:-1] for label, values in classes.rows.items()})
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    differences = differences_in_data(reports)
    notes = "".join(f'<p class="warning">Not comparable as they stand: {_text(d)}.</p>' for d in differences)
    data = next((r["provenance"].get("data") for r in reports.values() if (r.get("provenance") or {}).get("data")),
                None)
    if data and not differences:
        split = f"split {data.get('split')}" if data.get("split") else "read whole"
        notes += (f'<p class="meta">Measured on <code>{_text(data.get("spec"))}</code> ({_text(split)}, '
                  f'{_text(data.get("images"))} images).</p>')
    without = [label for label, report in reports.items() if not report.get("provenance")]
    if without:
        notes += (f'<p class="note">No provenance in the reports of {_text(", ".join(without))} (written before '
                  "layerseg recorded it): what they measured is not known.</p>")
    painted, missing = {}, []
    for label, report in reports.items():
        folder, files = painted_images(report, sources[label])
        if files:
            painted[label] = files
        elif folder is not None:
            missing.append(f"{label} ({folder})")
    pictures = ""
    if images and painted:
        pictures = (f"<h2>Predictions</h2><p class=\"note\">Painted by <code>layerseg eval --show-dir</code>; "
                    f"{min(images, len({n for f in painted.values() for n in f}))} images spread over those written. "
                    "Click an image to enlarge it.</p>" + image_rows(painted, images))
    if missing:
        pictures += f'<p class="note">Painted images not found: {_text("; ".join(missing))}.</p>'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>layerseg compare: {_text(", ".join(reports))}</title>
<style>{STYLE}</style>
</head>
<body>
<main>
<h1>Segmentation results: {len(reports)} model{"s" if len(reports) != 1 else ""}</h1>
<p class="meta">{_text(task.capitalize())} segmentation, in percent; below each value its difference in points
to <b>{_text(reference)}</b>, green where better, red where worse. Made {made} by layerseg-merge
{_text(version or "")}.</p>
{notes}
<h2>Results</h2>
{headline_table(headlines)}
<h2>{_text(metric)}</h2>
{class_table(classes)}
<h2>{_text(metric)}, as bars</h2>
{bar_chart(bars, colours)}
{pictures}
<h2>What was measured</h2>
{provenance_table(reports)}
</main>
<dialog id="zoom"><img alt=""><p class="note"></p></dialog>
<script>{SCRIPT}</script>
</body>
</html>
"""
