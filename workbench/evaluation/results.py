"""Result objects that show themselves in a notebook (ecco's ``output.py`` pattern).

A notebook cell ends with one of these and JupyterLab calls its ``_repr_html_``; code keeps
using the raw data on its attributes (``.frame``, ``.summary``, ``.runs``). Every text cell is
passed through ``html.escape``: corpus words, model names and task names are data, never markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..shortnames import labels_for

__all__ = ["ByStep", "LearningCurve", "ProbeGain", "StatsTable", "Table", "html_table", "verdict_words"]

_TABLE_STYLE = "border-collapse:collapse;font-size:0.9em"
_CELL_STYLE = "padding:2px 8px;border-bottom:1px solid #e5e7eb;text-align:{align}"
# stats.verdict()'s words, as a reader asks it: did pretraining help?
_VERDICT_WORDS = {"gain": "measurable gain", "loss": "measurable loss", "at chance": "at chance"}


def verdict_words(verdict: str) -> str:
    """A verdict as words: "measurable gain", "measurable loss", "at chance" (a probe gain's) or "no measurable gain"."""
    return _VERDICT_WORDS.get(verdict, "no measurable gain")


def _cell(value: Any, digits: int) -> str:
    """One value as escaped text: floats rounded, NaN as a dash."""
    if isinstance(value, float):
        return "–" if math.isnan(value) else html.escape(f"{value:.{digits}f}")
    return html.escape(str(value))


def html_table(frame: pd.DataFrame, title: str = "", digits: int = 4, index: bool = True,
               titles: Mapping[str, str] | None = None) -> str:
    """An HTML table of ``frame`` with every header, index and cell escaped; ``titles``: a tooltip per cell text."""
    def cell(value: Any, tag: str) -> str:
        align = "left" if tag == "th" else "right"  # names left, numbers right
        tip = (titles or {}).get(value) if isinstance(value, str) else None
        attr = f' title="{html.escape(tip)}"' if tip else ""
        return f'<{tag} style="{_CELL_STYLE.format(align=align)}"{attr}>{_cell(value, digits)}</{tag}>'

    head = "".join(cell(c, "th") for c in ([frame.index.name or ""] if index else []) + list(frame.columns))
    body = "".join("<tr>" + (cell(i, "th") if index else "") + "".join(cell(v, "td") for v in values) + "</tr>"
                   for i, values in zip(frame.index, frame.itertuples(index=False), strict=True))
    caption = f'<caption style="text-align:left;font-weight:bold">{html.escape(title)}</caption>' if title else ""
    return (f'<table class="wb-table" style="{_TABLE_STYLE}">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


@dataclass
class Table:
    """A DataFrame with a title that shows itself as an escaped HTML table (e.g. notable heads)."""

    frame: pd.DataFrame = field(repr=False)
    title: str = ""
    digits: int = 3

    def _repr_html_(self) -> str:
        if self.frame.empty:
            return f"<p><b>{html.escape(self.title)}</b>: none</p>"
        return html_table(self.frame, self.title, self.digits, index=not isinstance(self.frame.index, pd.RangeIndex))

    def __repr__(self) -> str:
        return f"{self.title or 'Table'} ({len(self.frame)} rows)\n{self.frame.to_string()}"


@dataclass
class StatsTable:
    """Named statistics (corpus, vocabulary coverage, evaluation) as a one-column table."""

    stats: dict[str, Any]
    title: str = ""

    @property
    def frame(self) -> pd.DataFrame:
        """One ``value`` column indexed by the statistic's name (floats rounded to 4 places)."""
        return pd.DataFrame({"value": [str(round(v, 4)) if isinstance(v, float) else str(v)
                                       for v in self.stats.values()]}, index=list(self.stats))

    def _repr_html_(self) -> str:
        return html_table(self.frame, self.title)

    def __repr__(self) -> str:
        return self.frame.to_string()


def _interval(mean: float, low: float, high: float, scale: float, signed: bool = False) -> str:
    """``mean [low, high]`` in points; an unknown interval (one seed) is said so."""
    fmt = "+.1f" if signed else ".1f"
    if math.isnan(mean):
        return "–"
    if math.isnan(low) or math.isnan(high):
        return f"{mean * scale:{fmt}} (CI unknown)"
    return f"{mean * scale:{fmt}} [{low * scale:{fmt}}, {high * scale:{fmt}}]"


@dataclass
class LearningCurve:
    """A learning curve: ``runs`` (one row per fine-tune) and ``summary`` (mean, CI and paired gain per init and n)."""

    runs: pd.DataFrame = field(repr=False)
    summary: pd.DataFrame = field(repr=False)
    confidence: float = 0.95

    @classmethod
    def from_runs(cls, runs: pd.DataFrame, confidence: float = 0.95) -> LearningCurve:
        """Summarise :func:`workbench.evaluation.fair_curves.learning_curve`'s rows with ``curve_summary``."""
        from .fair_curves import curve_summary

        return cls(runs, curve_summary(runs, confidence), confidence)

    def figure(self, log_x: bool = True) -> Any:
        """Accuracy against training examples, one line per init, with CI bars (a plotly figure)."""
        from ..notebook.plots import learning_curve

        return learning_curve(self.summary, log_x=log_x)

    def _labels(self) -> dict[Any, str]:
        s = self.summary
        return labels_for([*s["init"], *(b for b in s["baseline"] if b)])

    def table(self, scale: float = 100.0) -> pd.DataFrame:
        """The summary in words: encoders by short name, accuracy and gain in points with their CI, and the verdict."""
        s, names = self.summary, self._labels()
        level = f"{self.confidence:.0%} CI"
        return pd.DataFrame({
            "init": s["init"].map(names), "examples": s["n_train"].astype(int), "seeds": s["runs"].astype(int),
            f"accuracy, {level}": [_interval(m, lo, hi, scale) for m, lo, hi in
                                   zip(s["accuracy_mean"], s["accuracy_ci_low"], s["accuracy_ci_high"], strict=True)],
            "against": [names[b] if b else b for b in s["baseline"]],
            f"gain (points), {level}": [_interval(g, lo, hi, scale, signed=True) if b else "" for g, lo, hi, b in
                                        zip(s["gain"], s["gain_ci_low"], s["gain_ci_high"], s["baseline"], strict=True)],
            "verdict": [verdict_words(v) if b else "" for v, b in zip(s["verdict"], s["baseline"], strict=True)],
        })

    def _repr_html_(self) -> str:
        tips = {label: str(spec) for spec, label in self._labels().items() if label != spec}
        return html_table(self.table(), "Learning curve: test accuracy (points) by training examples", index=False,
                          titles=tips)

    def __repr__(self) -> str:
        return self.table().to_string(index=False)


@dataclass
class ProbeGain:
    """A probe's answer: the checkpoint against its baseline in words, and every encoder's best-layer accuracy.

    ``gain``: ``probes.probe_gain``'s dict (the two accuracies, the paired gain and its CI);
    ``headline``: ``probes.headline_table``; ``chance`` (0.5 for bigram shift): two encoders both
    within binomial noise of it read "at chance"; ``runs``: the probe rows, for the by-layer plot.
    """

    gain: Mapping[str, Any] = field(repr=False)
    headline: pd.DataFrame = field(repr=False)
    chance: float | None = None
    runs: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def accuracy(self) -> tuple[float, float, float]:
        """The checkpoint's test accuracy at its chosen layers: mean, low, high over seeds."""
        return tuple(self.gain["accuracy"])

    @property
    def baseline_accuracy(self) -> tuple[float, float, float]:
        """The baseline's (the random twin's) test accuracy: mean, low, high over seeds."""
        return tuple(self.gain["baseline_accuracy"])

    @property
    def verdict(self) -> str:
        """The verdict: "at chance" (with ``chance``), else the paired gain's ("gain", "loss", "no measurable difference")."""
        from .stats import gain_verdict

        return gain_verdict(dict(self.gain), self.chance)

    @property
    def sentence(self) -> str:
        """The paired gain in words (``stats.gain_sentence``); "both at chance" when they are."""
        from .stats import gain_sentence

        return gain_sentence(dict(self.gain), chance=self.chance)

    def _repr_html_(self) -> str:
        verdict = f'<span class="wb-verdict">{html.escape(verdict_words(self.verdict))}</span>'
        names = labels_for(self.headline.index)
        shown = self.headline.rename(index=names)
        tips = {label: str(spec) for spec, label in names.items() if label != spec}
        return (f"<p>{verdict} · {html.escape(self.sentence)}</p>"
                + html_table(shown, "Test accuracy at the layer chosen on validation", titles=tips))

    def __repr__(self) -> str:
        return f"{self.sentence}\n{self.headline.to_string()}"


@dataclass
class ByStep:
    """``progression.by_step``'s answer: one row per kept checkpoint, and the random twin's line to clear.

    ``frame``: step, checkpoint, probe accuracy (mean, CI over seeds), head statistics, MLM/NSP
    accuracy; ``random_accuracy``: the twin's test accuracy (mean, low, high), None without a
    baseline; ``gain``: the last step against the twin, paired by seed, when by_step probed the twin.
    """

    frame: pd.DataFrame = field(repr=False)
    task: str = ""
    seeds: list[int] = field(default_factory=list)
    n_test: int = 0
    random_accuracy: tuple[float, float, float] | None = None
    gain: Mapping[str, Any] | None = field(default=None, repr=False)

    def figure(self) -> Any:
        """Probe accuracy with the twin's line, MLM/NSP accuracy and head statistics by step (``plots.by_step``)."""
        from ..notebook.plots import by_step

        return by_step(self)

    def table(self) -> pd.DataFrame:
        """The rows without the checkpoint paths, indexed by step."""
        return self.frame.drop(columns="checkpoint", errors="ignore").set_index("step")

    def summary(self) -> str:
        """One line: the task and seeds, the random twin's accuracy and the last step's gain over it (in points)."""
        text = f"probe on {self.task}: {len(self.seeds)} seeds, {self.n_test} test examples"
        if self.random_accuracy is not None:
            text += f"; random twin {_interval(*self.random_accuracy, scale=100.0)} points"
        if self.gain is not None:
            g = self.gain
            text += (f"; last step against it {_interval(g['mean'], g['low'], g['high'], 100.0, signed=True)} points, "
                     f"{verdict_words(g['verdict'])}")
        return text

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.summary())}</p>" + html_table(self.table(), "Over pretraining, by step", digits=3)

    def __repr__(self) -> str:
        return f"{self.summary()}\n{self.table().round(3).to_string()}"
