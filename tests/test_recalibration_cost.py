"""What predict and evaluate cost, counted rather than timed: how many origins the recalibration of an interval
forecasts, and in how many calls of a network. The saved model is untrained (it forecasts the last value) and
calibrated without training, so nothing trains."""

from forecast.bulk import MAX_HISTORY_BYTES, MAX_ROWS, bulk_batch_size
from forecast.config import Config

from conftest import ETTH1, counted_calls, head_csv, span
from saved_models import calibrated_model

SMALL = Config(target="OT", past=(), lookback=24, horizon=6, batch_size=8, units=4, head_units=4)


def test_predict_recalibrates_on_the_window_alone_in_one_large_batch_per_chunk(tmp_path, monkeypatch):
    import forecast.runner as runner
    from forecast.prediction import predict
    from forecast.store import current_version, read_saved

    csv = head_csv(ETTH1, 600, tmp_path / "ett.csv")
    model = calibrated_model(csv, SMALL, tmp_path / "m")
    window = read_saved(current_version(model)).intervals.window
    requested = []
    real = runner.forecasts_at

    def recording(network, batcher, ranges, chunks, advance=None):
        requested.append(sum(span.size for span in ranges))
        return real(network, batcher, ranges, chunks, advance)

    monkeypatch.setattr(runner, "forecasts_at", recording)
    calls = counted_calls(monkeypatch)
    predict(csv, model)
    # The origin, then the window's errors and the H origins before the origin whose truth it knows only in part.
    assert requested == [1, window + SMALL.horizon]
    # Each a stream of K chunks at once: the origin's at the network's batch, the window's at one batch that holds it
    # all (at the network's batch of 8, 19 streams of 4 chunks: 76 calls).
    chunks = SMALL.chunks_per_stream
    assert calls[:chunks] == [SMALL.batch_size] * chunks
    assert len(calls) == 2 * chunks and min(calls[chunks:]) >= window + SMALL.horizon


def test_the_bulk_batch_holds_as_many_origins_as_the_bounds_allow_in_even_calls():
    assert bulk_batch_size(3484, 32, 96 * 8 * 4) == 1760  # two calls of 1,760 rows rather than 2,048 and 1,436
    assert bulk_batch_size(151, 8, 24 * 2 * 4) == 152
    assert bulk_batch_size(40, 32, 96 * 8 * 4) == 32  # two batches of its own: no copy is worth building
    assert bulk_batch_size(10_000, 32, 96 * 8 * 4) <= MAX_ROWS
    assert bulk_batch_size(10_000, 32, MAX_HISTORY_BYTES // 100) == 96  # a long lookback with many channels
    assert bulk_batch_size(10_000, 32, MAX_HISTORY_BYTES) == 32  # never below the network's own batch


def test_a_model_without_state_forecasts_each_origin_in_one_call_without_warm_up(tmp_path, monkeypatch):
    from forecast.data import load_series
    from forecast.features import InputLayout, build_features, fit_scaler
    from forecast.model import build_model, linear_part
    from forecast.runner import forecasts_at
    from forecast.windowing import WindowBatcher

    series = load_series(head_csv(ETTH1, 300, tmp_path / "ett.csv"), SMALL)
    layout = InputLayout.from_roles(series.roles, series.freq)
    batcher = WindowBatcher(build_features(series, fit_scaler(series, 200), 0), SMALL.lookback, SMALL.horizon)
    linear = linear_part(build_model(SMALL, layout, SMALL.batch_size))  # what a kept linear start is saved as
    calls = counted_calls(monkeypatch)
    forecast = forecasts_at(linear, batcher, span(100, 139, SMALL.lookback), SMALL.chunks_per_stream)
    assert forecast.shape == (40, SMALL.horizon) and len(calls) == 40 // SMALL.batch_size  # not K calls per batch
