"""`layerseg analyze --plot`: every line drawn has a legend entry, the anchor's included."""

import matplotlib.figure

from layerseg_merge.tools.analyze import analyze, plot


def test_every_model_line_is_in_the_legend_and_the_anchor_says_so(tmp_path, segformers, monkeypatch):
    report = analyze([str(p) for p in segformers], anchor=1, progress=False)
    drawn = {}
    original = matplotlib.figure.Figure.savefig

    def spy(figure, *args, **kwargs):
        drawn["lines"] = {line.get_label() for axis in figure.axes for line in axis.get_lines()}
        drawn["legend"] = [text.get_text() for legend in figure.legends for text in legend.get_texts()]
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    plot(report, tmp_path / "a.png")
    names = [p.name for p in segformers]
    assert drawn["legend"] == [f"{names[1]} (anchor)", names[0], names[2]]
    assert drawn["lines"] <= set(drawn["legend"]) and f"{names[1]} (anchor)" in drawn["lines"]
    assert (tmp_path / "a.png").stat().st_size > 0
