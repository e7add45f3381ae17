"""The keep/discard gate at the end of training: the trained network, or the weights it started from (the linear start,
or in a warm retrain the current version's), judged on validation by the run's one score (`criterion.score`).

The trained network is kept only when it beats its start clearly (`criterion.Improvement.clear`): at least MIN_BLOCKS
independent blocks of H origins and a t statistic above the Student t threshold for their number. A network that only
matches its start, or beats it on too few blocks to tell, has found nothing shown to generalise, and the simpler model
is the safer forecast for unseen data. With many series the gate also names the series that argued most for each side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from forecast.criterion import Improvement, improvement
from forecast.error_sums import ErrorSums, Forecasts, TargetSums

# How many series the verdict names on each side.
NAMED_SERIES = 3


@dataclass(frozen=True)
class SeriesArgument:
    """One series' part in the verdict: its id, its validation NSE under the start and under the trained network, and
    its share of the score difference (start minus trained: positive favours the network)."""

    series: str
    nse_start: float
    nse_trained: float
    gain: float

    def describe(self) -> str:
        return f"{self.series} (NSE {self.nse_start:.2f} start, {self.nse_trained:.2f} network)"


@dataclass(frozen=True)
class Verdict:
    """The gate's decision: the score of the start and of the trained network, the paired test between them, and the
    series that favoured each most (empty for one series)."""

    start_score: float
    trained_score: float
    improvement: Improvement
    favoured_start: tuple[SeriesArgument, ...] = ()
    favoured_network: tuple[SeriesArgument, ...] = ()

    @property
    def keeps_network(self) -> bool:
        return self.improvement.clear

    @property
    def t(self) -> float:
        return self.improvement.t

    @property
    def blocks(self) -> int:
        return self.improvement.blocks

    def describe_series(self) -> str:
        """One line naming the series that argued most for each side, or "" for one series."""
        if not self.favoured_start and not self.favoured_network:
            return ""
        parts = []
        if self.favoured_start:
            parts.append("most for the start: " + ", ".join(item.describe() for item in self.favoured_start))
        if self.favoured_network:
            parts.append("most for the network: " + ", ".join(item.describe() for item in self.favoured_network))
        return "series that argued " + "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "t": self.t, "blocks": self.blocks, "start_score": self.start_score, "trained_score": self.trained_score,
            "favoured_start": [vars(item) for item in self.favoured_start],
            "favoured_network": [vars(item) for item in self.favoured_network],
        }


def judge(start: ErrorSums, trained: ErrorSums, targets: TargetSums, origins: np.ndarray, series: np.ndarray,
          series_ids: tuple[str, ...], horizon: int) -> Verdict:
    """The verdict on the validation errors of the start and of the trained network (`error_sums.ErrorSums`, against
    the same `targets`); `origins` (n,) the origins' rows (blocks of the paired test run over consecutive origins),
    `series` (n,) each origin's series index into `series_ids`."""
    start_losses, trained_losses = start.origin_losses(), trained.origin_losses()
    verdict = improvement(start_losses, trained_losses, origins, horizon)
    arguments = _series_arguments(start, trained, targets, series, series_ids, start_losses - trained_losses)
    against = tuple(item for item in sorted(arguments, key=lambda item: item.gain) if item.gain < 0)[:NAMED_SERIES]
    favour = tuple(item for item in sorted(arguments, key=lambda item: -item.gain) if item.gain > 0)[:NAMED_SERIES]
    return Verdict(start.score, trained.score, verdict, against, favour)


def _series_arguments(start: ErrorSums, trained: ErrorSums, targets: TargetSums, series: np.ndarray,
                      series_ids: tuple[str, ...], differences: np.ndarray) -> list[SeriesArgument]:
    """Each series' NSE under both and its summed loss difference (per origin, NaN where not scored); none for one
    series."""
    present = np.flatnonzero(targets.counts > 0)
    if len(present) <= 1:
        return []
    start_nse, trained_nse = start.series_nse(targets), trained.series_nse(targets)
    gains = np.bincount(series, np.nan_to_num(differences, nan=0.0), minlength=len(targets.counts)) / len(differences)
    return [SeriesArgument(series_ids[index], float(start_nse[index]), float(trained_nse[index]), float(gains[index]))
            for index in present]


Log = Callable[[str], None]


def keep_the_better(model, start_weights: list, trained: Forecasts, forecaster: Callable[[object], Forecasts],
                    errors_of: Callable[[Forecasts], ErrorSums], targets: TargetSums, origins: np.ndarray,
                    series: np.ndarray, series_ids: tuple[str, ...], horizon: int, log: Log,
                    start_label: str = "the linear start"):
    """Keeps the trained `model` unless it does not beat `start_weights` clearly (`judge`). `trained` gives the
    trained model's validation forecasts at the origins `part` (m, H), `forecaster(model)` gives `model`'s with the
    weights it has when called, and `errors_of(forecasts)` their errors against `targets`: the start's are summed as
    they are made, a chunk of origins at a time, so that no (n, H) array of them is held beside the trained model's.
    Returns the kept weights' `Forecasts`, whether the start was kept (`model` then keeps its weights), and the
    `Verdict`."""
    trained_weights = model.get_weights()
    model.set_weights(start_weights)
    start = forecaster(model)
    verdict = judge(errors_of(start), errors_of(trained), targets, origins, series, series_ids, horizon)
    scores = f"validation score {verdict.start_score:.4f}, trained {verdict.trained_score:.4f}"
    named = verdict.describe_series()
    if not verdict.keeps_network:
        log(f"kept {start_label}: {scores} ({verdict.improvement.describe()})")
        if named:
            log(named)
        return start, True, verdict
    log(f"the trained network beats {start_label}: {scores} ({verdict.improvement.describe()})")
    if named:
        log(named)
    model.set_weights(trained_weights)
    return trained, False, verdict
