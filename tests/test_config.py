import json

import pytest

from forecast.config import Config
from forecast.errors import ForecastError


def test_toml_values_are_overridden_by_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('target = "OT"\nsim = ["MOD_RUN"]\nlookback = 48\nepochs = 7\n', encoding="utf-8")
    config = Config.from_toml(path).replace(lookback=24, horizon=None)
    assert (config.target, config.sim, config.lookback, config.horizon, config.epochs) == ("OT", ("MOD_RUN",), 24, 24, 7)


def test_json_round_trip_gives_the_same_object():
    config = Config(target="OT", sim=("a", "b"), past=("c",), train_end="2000-01-01")
    assert Config.from_dict(json.loads(config.to_json()), "saved") == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('lookbak = 3\n', "unknown setting 'lookbak'"),
        ('lookback = "96"\n', "lookback has the wrong type"),
        ('lookback = 0\n', "lookback must be at least 1"),
        ('target = \n', "not a valid TOML file"),
        ('epochs = 3\ninitial_epoch = 3\n', "initial_epoch (3) must be at least 0 and below epochs (3)"),
    ],
)
def test_bad_settings_name_the_file_and_the_setting(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ForecastError, match="bad.toml") as error:
        Config.from_toml(path)
    assert message in str(error.value)


def test_stateless_mode_walks_one_chunk_per_stream():
    assert Config(stream_chunks=4).chunks_per_stream == 4
    assert Config(stream_chunks=4, stateful=False).chunks_per_stream == 1


def test_a_configuration_saved_before_the_decoder_reads_as_the_dense_head(tmp_path):
    saved = json.loads(Config(target="OT").to_json())
    del saved["decoder"]  # what config.json and a checkpoint's state.json held before the setting existed
    (tmp_path / "config.json").write_text(json.dumps(saved), encoding="utf-8")
    (tmp_path / "state.json").write_text(json.dumps({"epoch": 3, "config": saved}), encoding="utf-8")
    assert Config.from_json(tmp_path / "config.json").decoder is False
    assert Config.from_json(tmp_path / "state.json", key="config").decoder is False
    assert Config().decoder is True and Config.from_json(_saved(tmp_path, Config(decoder=True))).decoder is True


def _saved(directory, config):
    path = directory / "new.json"
    path.write_text(config.to_json(), encoding="utf-8")
    return path
