import json
from pathlib import Path

import pytest

from daemon import config as cfg
from daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "conf" / "spkd.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_repo_config_loads_with_documented_defaults():
    config = cfg.load(REPO / "config.json", env={})
    assert config.paths.inbox == REPO / "var" / "inbox"
    assert config.models.dir == REPO / "models"
    assert config.workers.device == "auto"
    assert config.database_url == f"sqlite:///{REPO / 'var' / 'state' / 'spkd.db'}"


def test_every_key_of_the_repo_config_is_documented_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for section, values in cfg.Config().to_dict().items():
        for key in values:
            assert f"`{section}.{key}`" in readme, f"{section}.{key} is not documented in README.md"


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    path = write(tmp_path, {"paths": {"inbox": "in", "outbox": "/abs/out"}, "models": {"dir": "../m"}})
    config = cfg.load(path, env={})
    assert config.paths.inbox == tmp_path / "conf" / "in"
    assert config.paths.outbox == Path("/abs/out")
    assert config.models.dir == tmp_path / "m"
    assert config.source == path


@pytest.mark.parametrize("data, key", [
    ({"workers": {"cout": 2}}, "workers.cout"),
    ({"wrkers": {}}, "wrkers"),
    ({"workers": {"count": "two"}}, "workers.count"),
    ({"workers": {"count": 0}}, "workers.count"),
    ({"workers": {"device": "tpu"}}, "workers.device"),
    ({"workers": {"fallback": "yes"}}, "workers.fallback"),
    ({"workers": {"device_priority": ["cuda", "gpu"]}}, "workers.device_priority"),
    ({"output": {"formats": ["json", "docx"]}}, "output.formats"),
    ({"watch": {"settle_seconds": -1}}, "watch.settle_seconds"),
    ({"paths": {"inbox": 3}}, "paths.inbox"),
    ({"models": {"spk": 5}}, "models.spk"),
    ({"audio": {"channels": "stereo"}}, "audio.channels"),
    ({"audio": {"channels": ["a", "a"]}}, "audio.channels"),
    ({"audio": {"channels": 2}}, "audio.channels"),
])
def test_bad_config_names_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError) as info:
        cfg.load(write(tmp_path, data), env={})
    assert str(info.value).startswith(key)


def test_audio_channels(tmp_path):
    assert cfg.load(write(tmp_path, {}), env={}).audio.channels == "mix"
    assert cfg.load(write(tmp_path, {"audio": {"channels": "auto"}}), env={}).audio.channels == "auto"
    names = cfg.load(write(tmp_path, {"audio": {"channels": ["客服", "客户"]}}), env={}).audio.channels
    assert names == ("客服", "客户")


def test_spk_may_be_null(tmp_path):
    assert cfg.load(write(tmp_path, {"models": {"spk": None}}), env={}).models.spk is None


def test_output_folder_inside_the_inbox_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="paths.outbox"):
        cfg.load(write(tmp_path, {"paths": {"inbox": "in", "outbox": "in/out"}}), env={})


def test_environment_overrides(tmp_path):
    path = write(tmp_path, {"workers": {"count": 1}})
    config = cfg.load(path, env={"SPKD_WORKERS_COUNT": "3", "SPKD_DATABASE_URL": "sqlite:////tmp/x.db",
                                 "SPKD_WATCH_SETTLE_SECONDS": "0.5", "UNRELATED": "1"})
    assert config.workers.count == 3
    assert config.database.url == "sqlite:////tmp/x.db"
    assert config.watch.settle_seconds == 0.5


def test_bad_environment_override_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="^workers.count"):
        cfg.load(write(tmp_path, {}), env={"SPKD_WORKERS_COUNT": "many"})


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        cfg.load(tmp_path / "nope.json", env={})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        cfg.load(bad, env={})
