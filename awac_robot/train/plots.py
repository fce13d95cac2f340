"""Run figures from `metrics.jsonl`: a run's `curve.png` (redrawn at every evaluation) and `awac-robot plot`.

The two phases get their own axes because they count different things: offline, the only
clock is gradient updates; online, it is env steps (the sample cost AWAC is judged by).
Every eval point carries its 95% Wilson interval over its episodes; runs of one task and
algorithm (seeds) are pooled into one line, the mean over runs, with the interval of the
pooled episodes as the band and each run drawn thin beside it. The other panels are
per-update diagnostics: Q statistics, the advantage weights' effective sample size (how
many of a batch's samples the actor actually learns from), losses and updates/s.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from awac_robot.train.config import ConfigError, TrainConfig, load_config
from awac_robot.train.evaluation import wilson_interval
from awac_robot.train.runlog import CURVE, RunLog, RunLogError

CONFIG = "config.yaml"


class PlotError(ValueError):
    """A folder that is not a run, or runs with nothing to draw; the message says which."""


@dataclass
class Run:
    path: Path
    config: TrainConfig
    rows: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> Run:
        path = Path(path)
        if not (path / CONFIG).is_file():
            raise PlotError(f"{path} is not a run folder (no {CONFIG}): pass folders made by train or finetune")
        try:
            return cls(path, load_config(path / CONFIG), RunLog(path).rows())
        except (ConfigError, RunLogError) as exc:
            raise PlotError(str(exc)) from None

    @property
    def group(self) -> str:
        return f"{self.config.task} {self.config.algo}"

    def evals(self, phase: str) -> list[dict[str, Any]]:
        """Eval rows of a phase; the online curve starts at the last offline evaluation (env step 0)."""
        rows = [r for r in self.rows if "eval_success" in r]
        if phase == "offline":
            return [r for r in rows if r["phase"] == "offline"]
        online = [r for r in rows if r["phase"] == "online"]
        offline = [r for r in rows if r["phase"] == "offline"]
        return ([offline[-1]] if online and offline else []) + online

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """A per-update metric against updates (empty when the run never logged it, e.g. Q for bc)."""
        rows = [r for r in self.rows if key in r and "updates" in r]
        return np.array([r["updates"] for r in rows]), np.array([r[key] for r in rows], dtype=float)


@dataclass(frozen=True)
class SuccessCurve:
    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: list[tuple[np.ndarray, np.ndarray]]


def success_curve(runs: Sequence[Run], phase: str) -> SuccessCurve:
    """Mean success over runs at each eval point, with the Wilson interval of the pooled episodes."""
    pooled: dict[int, list[tuple[float, int]]] = defaultdict(list)
    per_run = []
    for run in runs:
        rows = run.evals(phase)
        x_key = "updates" if phase == "offline" else "env_steps"
        per_run.append((np.array([r[x_key] for r in rows]), np.array([r["eval_success"] for r in rows])))
        for r in rows:
            pooled[r[x_key]].append((r["eval_success"], int(r.get("eval_episodes", 1))))
    x = np.array(sorted(pooled))
    mean, low, high = [], [], []
    for point in x:
        rates, episodes = zip(*pooled[point], strict=True)
        successes = sum(round(rate * n) for rate, n in zip(rates, episodes, strict=True))
        lo, hi = wilson_interval(successes, sum(episodes))
        mean.append(float(np.mean(rates)))
        low.append(lo)
        high.append(hi)
    return SuccessCurve(x, np.array(mean), np.array(low), np.array(high), per_run)


def _pyplot() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _draw_success(ax: Any, runs: Sequence[Run], phase: str, colour: str, label: str) -> bool:
    curve = success_curve(runs, phase)
    if not curve.x.size:
        return False
    if len(runs) > 1:
        for x, y in curve.runs:
            ax.plot(x, 100 * y, color=colour, alpha=0.35, linewidth=0.8)
    ax.fill_between(curve.x, 100 * curve.low, 100 * curve.high, color=colour, alpha=0.2, linewidth=0)
    runs_text = f"mean of {len(runs)} runs" if len(runs) > 1 else "1 run"
    error = 100 * np.clip(np.stack([curve.mean - curve.low, curve.high - curve.mean]), 0.0, None)  # rounding
    ax.errorbar(curve.x, 100 * curve.mean, yerr=error, marker="o", markersize=3, capsize=3, color=colour)
    ax.plot([], [], marker="o", color=colour, label=f"{label} ({runs_text}, 95% Wilson)")
    return True


def _draw_metric(ax: Any, runs: Sequence[Run], key: str, colour: str, label: str, band: tuple[str, str] | None) -> bool:
    """Mean over runs at each logged update; band: min..max over runs, or the given pair of batch statistics."""
    series = [run.series(key) for run in runs]
    series = [(x, y) for x, y in series if x.size]
    if not series:
        return False
    x, mean, low, high = _aligned(series)
    if band is not None:
        _, _, low, _ = _aligned([s for run in runs if (s := run.series(band[0]))[0].size])
        _, _, _, high = _aligned([s for run in runs if (s := run.series(band[1]))[0].size])
    if band is not None or len(series) > 1:
        ax.fill_between(x, low, high, color=colour, alpha=0.2, linewidth=0)
    ax.plot(x, mean, color=colour, label=label)
    return True


def _aligned(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    points: dict[int, list[float]] = defaultdict(list)
    for x, y in series:
        for a, b in zip(x.tolist(), y.tolist(), strict=True):
            points[a].append(b)
    x = np.array(sorted(points))
    values = [points[a] for a in x]
    return (
        x,
        np.array([np.mean(v) for v in values]),
        np.array([np.min(v) for v in values]),
        np.array([np.max(v) for v in values]),
    )


PANELS = (
    ("critic_loss", "critic loss (TD error$^2$, log scale)", None),
    ("actor_loss", "actor loss (-weighted log-likelihood)", None),
    ("q_mean", "Q(s, a) on replay batches (band: batch min..max)", ("q_min", "q_max")),
    ("weight_ess", "advantage-weight effective sample size", None),
    ("log_std", "policy log-std (mean over action dims)", None),
    ("updates_per_s", "updates / s (wall clock between log rows, evaluations included)", None),
)


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        groups[run.group].append(run)
    return dict(groups)


def default_title(runs: Sequence[Run]) -> str:
    groups = group_runs(runs)
    if len(runs) == 1:
        run = runs[0]
        return f"{run.config.task}: run {run.path} ({run.config.algo}, seed {run.config.seed})"
    parts = [f"{name} (seeds {', '.join(str(r.config.seed) for r in members)})" for name, members in groups.items()]
    return f"{len(runs)} runs: " + "; ".join(parts)


def draw_runs(runs: Sequence[Run], out: Path, title: str | None = None) -> Path:
    """The full figure of `awac-robot plot`: both success curves and the per-update diagnostics."""
    if not any(r.rows for r in runs):
        raise PlotError(f"{', '.join(str(r.path) for r in runs)}: no metrics logged yet")
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    groups = group_runs(runs)
    drawn: dict[int, bool] = defaultdict(bool)
    for (name, members), colour in zip(groups.items(), colours, strict=False):
        drawn[0] |= _draw_success(axes[0, 0], members, "offline", colour, name)
        drawn[1] |= _draw_success(axes[0, 1], members, "online", colour, name)
        for i, (key, _, band) in enumerate(PANELS, start=2):
            drawn[i] |= _draw_metric(axes.flat[i], members, key, colour, name, band)
        for ax in axes.flat[2:]:
            ax.axvline(members[0].config.offline_steps, color=colour, linestyle=":", linewidth=1)
    offline_budget = max(r.config.offline_steps for r in runs)
    online_budget = max(r.config.online_steps for r in runs)
    _style_success(axes[0, 0], "offline: eval success", "gradient updates", offline_budget)
    _style_success(axes[0, 1], "online: eval success (0 = end of offline)", "online env steps", online_budget)
    for i, (key, text, _) in enumerate(PANELS, start=2):
        ax = axes.flat[i]
        ax.set_title(text, fontsize=10)
        ax.set_xlabel("gradient updates (dotted: offline -> online)")
        ax.grid(alpha=0.3)
        if key == "critic_loss" and drawn[i]:
            ax.set_yscale("log")
        if key == "weight_ess":
            batch = max(r.config.batch_size for r in runs)
            ax.axhline(batch, color="0.5", linewidth=1, linestyle="--", label=f"batch size {batch} (uniform)")
            ax.set_ylim(0, batch * 1.05)
    for i, ax in enumerate(axes.flat):
        if not drawn[i]:
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes)
    axes[0, 1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title or default_title(runs))
    fig.tight_layout()
    return _save(fig, Path(out), plt)


def draw_curve(run_dir: Path) -> Path:
    """`curve.png` of one run: eval success per phase, each point with its 95% Wilson interval."""
    run = Run.load(run_dir)
    plt = _pyplot()
    fig, (offline, online) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    colour = plt.rcParams["axes.prop_cycle"].by_key()["color"][0]
    if not _draw_success(offline, [run], "offline", colour, run.group):
        offline.text(0.5, 0.5, "no offline evaluation yet", ha="center", va="center", transform=offline.transAxes)
    if not _draw_success(online, [run], "online", colour, run.group):
        online.text(0.5, 0.5, "no online phase (yet)", ha="center", va="center", transform=online.transAxes)
    budget = run.config.offline_steps
    _style_success(offline, f"offline ({budget} updates)", "gradient updates", budget)
    _style_success(online, "online (0 = end of offline)", "online env steps", run.config.online_steps)
    episodes = run.config.eval_episodes
    fig.suptitle(f"{default_title([run])}: eval success over {episodes} episodes, band = 95% Wilson interval")
    fig.tight_layout()
    return _save(fig, Path(run_dir) / CURVE, plt)


def _style_success(ax: Any, title: str, xlabel: str, budget: int) -> None:
    """The x axis spans the phase's whole budget from 0, so a curve shows how far the run has got."""
    budget = max(budget, 1)  # a phase of 0 steps still gets an axis
    ax.set_xlim(-0.03 * budget, 1.03 * budget)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("eval success (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)


def _save(fig: Any, out: Path, plt: Any) -> Path:
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp{out.suffix}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    except OSError as exc:
        raise PlotError(f"cannot write {out} ({exc.strerror or exc}): choose another --out") from None
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out
