"""Scaling out with tf.distribute: two logical CPU devices stand in for two GPUs."""

import json
import subprocess
import sys

import pytest

from conftest import head_csv, ETTH1

SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from forecast import backend
from forecast.config import Config
from forecast.prediction import predict
from forecast.training import train

keras = backend.keras()
from forecast.model import stateful_layers

seen = {}


class PerReplicaState(keras.callbacks.Callback):
    # Each replica holds the state of its own B / 2 rows: after the first batch the two states differ.
    def on_train_batch_end(self, batch, logs=None):
        if batch == 0 and not seen:
            state = stateful_layers(self.model)[0].states[0]
            values = [np.asarray(value) for value in self.model.distribute_strategy.experimental_local_results(state.value)]
            seen["replicas"] = len(values)
            seen["differ"] = bool(len(values) == 2 and not np.allclose(values[0], values[1]))


config = Config(target="OT", lookback=24, horizon=6, batch_size=8, epochs=2, units=4, head_units=4, distribute="mirrored")
result = train(sys.argv[1], config, sys.argv[2], extra_callbacks=(PerReplicaState(),))
forecast = predict(sys.argv[1], sys.argv[2])
print(json.dumps({
    **seen,
    "val_mse": result.metrics["validation"]["model"]["mse"],
    "forecast_rows": len(forecast),
    "finite": bool(np.isfinite(forecast["OT"]).all()),
}))
"""


@pytest.mark.slow
def test_mirrored_strategy_trains_saves_and_keeps_a_state_per_replica(tmp_path):
    data = head_csv(ETTH1, 600, tmp_path / "ett.csv")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(data), str(tmp_path / "model")],
                            capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2 and report["forecast_rows"] == 6 and report["finite"]
    assert report["differ"] and report["val_mse"] > 0


@pytest.mark.parametrize("settings", [{"data_pipeline": "generator"}, {"workers": 2}, {"use_multiprocessing": True}])
def test_mirrored_refuses_pipelines_that_lose_batches_before_the_first_epoch(settings):
    from forecast.config import Config
    from forecast.errors import ForecastError

    with pytest.raises(ForecastError, match="mirrored\" needs data_pipeline = \"tfdata\", or \"pydataset\" with workers = 1"):
        Config(target="OT", distribute="mirrored", **settings)
    Config(target="OT", distribute="none", **settings)
    Config(target="OT", distribute="mirrored")
    Config(target="OT", distribute="mirrored", data_pipeline="pydataset")


FEED_SCRIPT = """
import json
import sys
import numpy as np
import pandas as pd
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from forecast import backend
from forecast.config import Config
from forecast.features import Features
from forecast.dataset import training_data
from forecast.sampler import OriginRange, StreamPlan
from forecast.windowing import WindowBatcher

keras = backend.keras()
from forecast.model import MaskedMSE

rows = 200
features = Features(
    history=np.stack([np.arange(rows), np.ones(rows)], 1).astype("float32"), target=np.arange(rows, dtype="float32"),
    sim=np.zeros((rows, 1), "float32"), bg=np.zeros((rows, 1), "float32"),
    time=pd.date_range("2020", periods=rows, freq="h"),
)
batcher = WindowBatcher(features, 6, 3)
plan = StreamPlan((OriginRange(0, 5, 180, 5),), 6, 3, batch_size=4, shuffle=True, seed=5)
expected = [batcher.batch(*[part[i] for part in plan.batches(epoch)])[1]["prediction"][:, 0].tolist()
            for epoch in (0, 1) for i in range(plan.n_batches)]
strategy = tf.distribute.MirroredStrategy(devices=[device.name for device in tf.config.list_logical_devices("CPU")])
fed = {0: [], 1: []}


class Recorder(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, inputs):
        return {"prediction": self.dense(inputs["bg"])}

    def train_step(self, data):
        replica = int(tf.distribute.get_replica_context().replica_id_in_sync_group)
        fed[replica].append(np.asarray(data[1]["prediction"])[:, 0].tolist())
        return super().train_step(data)


with strategy.scope():
    model = Recorder()
    model.compile(optimizer="sgd", loss={"prediction": MaskedMSE()}, run_eagerly=True)
data = training_data(batcher, plan, Config(target="y", distribute="mirrored", data_pipeline=sys.argv[1]), 0)
model.fit(data, epochs=2, steps_per_epoch=plan.n_batches, shuffle=False, verbose=0)
print(json.dumps({"expected": expected, "fed": [fed[0], fed[1]]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["tfdata", "pydataset"])
def test_under_mirrored_each_replica_gets_its_rows_of_every_planned_batch(pipeline):
    """Keras builds the distributed model from one batch of a fresh iterator: no batch may be lost or shifted by it."""
    result = subprocess.run([sys.executable, "-c", FEED_SCRIPT, pipeline], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for replica, fed in enumerate(report["fed"]):
        assert fed == [batch[2 * replica : 2 * replica + 2] for batch in report["expected"]], f"replica {replica}"
