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
    ({"output": {"formats": ["json", "pdf"]}}, "output.formats"),
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


# --- paths are compared where they really are -----------------------------------------

@pytest.mark.parametrize("archive", ["{root}/x/../conf/in/arch", "{root}/conf/in/./a/../arch", "{root}/link-to-inbox/arch"])
def test_a_folder_inside_the_inbox_is_refused_however_it_is_spelled(tmp_path, archive):
    (tmp_path / "conf" / "in").mkdir(parents=True)
    (tmp_path / "x").mkdir()
    (tmp_path / "link-to-inbox").symlink_to(tmp_path / "conf" / "in")
    path = write(tmp_path, {"paths": {"inbox": "in", "archive": archive.format(root=tmp_path)}})
    with pytest.raises(ConfigError, match="paths.archive: .* lies inside paths.inbox"):
        cfg.load(path, env={})


def test_paths_are_normalised(tmp_path):
    path = write(tmp_path, {"paths": {"outbox": f"{tmp_path}/a/../out", "archive": "./sub/../arch"}})
    config = cfg.load(path, env={})
    assert config.paths.outbox == tmp_path / "out" and config.paths.archive == tmp_path / "conf" / "arch"


# --- bounds --------------------------------------------------------------------------

@pytest.mark.parametrize("data, key, words", [
    ({"workers": {"count": 10_000}}, "workers.count", "from 1 to 1024"),
    ({"workers": {"per_device": 500}}, "workers.per_device", "from 1 to 64"),
    ({"jobs": {"max_attempts": 10**30}}, "jobs.max_attempts", "at most 2147483647"),
    ({"jobs": {"lease_seconds": 1e300}}, "jobs.lease_seconds", "at most"),
    ({"retention": {"archive_days": 1e12}}, "retention.archive_days", "at most"),
])
def test_numbers_out_of_bounds_are_refused(tmp_path, data, key, words):
    with pytest.raises(ConfigError, match=rf"^{key}: .*{words}"):
        cfg.load(write(tmp_path, data), env={})


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused_in_the_file_and_the_environment(tmp_path, text):
    path = tmp_path / "spkd.json"
    path.write_text('{"watch": {"settle_seconds": %s}}' % text)  # Python's json accepts these
    with pytest.raises(ConfigError, match="^watch.settle_seconds: expected a finite number"):
        cfg.load(path, env={})
    with pytest.raises(ConfigError, match="^jobs.lease_seconds: expected a finite number"):
        cfg.load(write(tmp_path, {}), env={"SPKD_JOBS_LEASE_SECONDS": text})


# Names the tests below use on purpose: they must be refused.
WRONG_OVERRIDES = {"SPKD_WORKER_COUNT", "SPKD_BOGUS_KEY", "SPKD_WORKERS_CONT", "SPKD_WORKERS"}


@pytest.mark.parametrize("name, words", [
    ("SPKD_WORKER_COUNT", "not a configuration key"),  # section typo
    ("SPKD_BOGUS_KEY", "not a configuration key"),
    ("SPKD_WORKERS_CONT", "workers.cont is not a configuration key"),  # key typo
    ("SPKD_WORKERS", "workers.? is not a configuration key"),
])
def test_unknown_environment_overrides_are_refused(tmp_path, name, words):
    with pytest.raises(ConfigError, match=rf"^{name}: {re_escape(words)}"):
        cfg.load(write(tmp_path, {}), env={name: "2"})


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_spkd_variables_that_are_not_overrides_are_left_alone(tmp_path):
    env = {"SPKD_CONFIG": "x.json", "SPKD_ENGINE_FACTORY": "tests.fakes.engine:make", "SPKD_WORKER_SLOT": "0",
           "SPKD_FAKE_DEVICES": "{}", "SPKD_TEST_POSTGRES_URL": "postgresql://x", "SPKD_BENCH_CACHE": "/tmp"}
    assert cfg.load(write(tmp_path, {}), env=env).workers.count == 1
    assert not any(cfg.is_override(name) for name in env)
    assert cfg.is_override("SPKD_WORKERS_COUNT") and cfg.is_override("SPKD_WORKER_COUNT")


def test_every_spkd_variable_the_code_reads_has_a_rule():
    """Each SPKD_ name in daemon/, tests/ and bench/ is a config override or one of the
    variables the config says are not."""
    import re

    names = set()
    for folder in ("daemon", "tests", "bench"):
        for source in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"\bSPKD_[A-Z][A-Z0-9_]*[A-Z0-9]\b", source.read_text(encoding="utf-8")))
    config = cfg.Config().to_dict()
    overrides = {f"SPKD_{section.upper()}_{key.upper()}" for section, keys in config.items() for key in keys}
    for name in sorted(names):
        assert (name in overrides or name in cfg.NON_CONFIG_ENV or name.startswith(cfg.NON_CONFIG_ENV_PREFIXES)
                or name in WRONG_OVERRIDES), name


def test_web_keys_are_checked_and_a_bad_token_is_not_repeated(tmp_path) -> None:
    from daemon.config import from_dict
    from daemon.errors import ConfigError

    config = from_dict({"web": {"listen": "[::1]:8765", "token": "x" * 16, "max_upload_mb": 10}}, base_dir=tmp_path,
                       env={})
    assert (config.web.listen, config.web.max_upload_mb) == ("[::1]:8765", 10)
    assert from_dict({}, base_dir=tmp_path, env={}).web.listen is None
    for listen in ("8765", "localhost", "::1:8765", "127.0.0.1:99999", "bad host:80"):
        with pytest.raises(ConfigError, match="web.listen"):
            from_dict({"web": {"listen": listen}}, base_dir=tmp_path, env={})
    with pytest.raises(ConfigError, match="web.token") as refused:
        from_dict({"web": {"token": "hunter2"}}, base_dir=tmp_path, env={})
    assert "hunter2" not in str(refused.value)


def test_a_bad_value_in_chinese_is_shown_as_written(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"workers": {"count": "两个"}}, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        cfg.load(path, env={})
    assert '"两个"' in str(caught.value) and "\\u" not in str(caught.value)
