"""Settings at the edge: what the environment says, and the precedence flag > environment > file > default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from infertide.cli import app
from infertide.settings import Settings
from schemas.topology import default_topology_path

runner = CliRunner()
ENV = ("KAFKA_BOOTSTRAP_SERVERS", "INFERTIDE_KAFKA_BOOTSTRAP_SERVERS", "INFERTIDE_CONFIG", "RAY_ADDRESS",
       "INFERTIDE_WEB_PORT", "INFERTIDE_CACHE", "INFERTIDE_PYTHON_GC")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def _effective(args: list[str], env: dict[str, str] | None = None) -> dict:
    res = runner.invoke(app, args, env=env)
    assert res.exit_code == 0, res.output
    return yaml.safe_load(res.stdout)


@pytest.fixture
def two_files(tmp_path: Path) -> tuple[Path, Path]:
    data = yaml.safe_load(default_topology_path().read_text())
    paths = []
    for name, servers in (("a", "file-a:9092"), ("b", "file-b:9092")):
        data["kafka"]["bootstrap_servers"] = servers
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
        paths.append(tmp_path / f"{name}.yaml")
    return paths[0], paths[1]


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings() == Settings(config=None, kafka_bootstrap_servers=None, ray_address=None, web_port=None,
                                  cache=None, python_gc=None)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "plain:1")
    monkeypatch.setenv("INFERTIDE_CONFIG", "/etc/t.yaml")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("INFERTIDE_WEB_PORT", "6066")
    s = Settings()
    assert (s.kafka_bootstrap_servers, s.config, s.ray_address, s.web_port) == \
        ("plain:1", Path("/etc/t.yaml"), "10.0.0.1:6379", 6066)
    monkeypatch.setenv("INFERTIDE_KAFKA_BOOTSTRAP_SERVERS", "ours:1")
    assert Settings().kafka_bootstrap_servers == "ours:1"  # our own name wins over the generic one
    monkeypatch.setenv("INFERTIDE_KAFKA_BOOTSTRAP_SERVERS", "")
    assert Settings().kafka_bootstrap_servers == "plain:1"  # empty counts as unset


def test_settings_are_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        Settings().web_port = 1  # type: ignore[misc]


def test_a_bad_environment_value_is_named_and_exits_2() -> None:
    res = runner.invoke(app, ["config"], env={"INFERTIDE_WEB_PORT": "abc"})
    assert res.exit_code == 2 and "web_port" in res.output and "infertide/settings.py" in res.output


def test_flag_beats_environment_beats_file(two_files: tuple[Path, Path]) -> None:
    a, _ = two_files
    assert _effective(["--config", str(a), "config"])["kafka"]["bootstrap_servers"] == "file-a:9092"
    env = {"KAFKA_BOOTSTRAP_SERVERS": "env:9092"}
    assert _effective(["--config", str(a), "config"], env)["kafka"]["bootstrap_servers"] == "env:9092"
    assert _effective(["--config", str(a), "config", "--bootstrap", "flag:9092"], env)["kafka"][
        "bootstrap_servers"] == "flag:9092"


def test_command_config_beats_root_config_beats_environment(two_files: tuple[Path, Path]) -> None:
    a, b = two_files
    servers = lambda args, env=None: _effective(args, env)["kafka"]["bootstrap_servers"]  # noqa: E731
    assert servers(["config"], {"INFERTIDE_CONFIG": str(a)}) == "file-a:9092"
    assert servers(["--config", str(b), "config"], {"INFERTIDE_CONFIG": str(a)}) == "file-b:9092"
    assert servers(["--config", str(a), "config", "--config", str(b)]) == "file-b:9092"
    assert servers(["config"]) == "127.0.0.1:9092"  # nothing chosen: the packaged default


def test_a_missing_config_exits_2_with_the_fix(tmp_path: Path) -> None:
    res = runner.invoke(app, ["config", "--config", str(tmp_path / "nope.yaml")])
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and "does not exist" in text and "--config" in text


def test_project_cache_follows_infertide_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from infertide.local.broker import project_cache

    monkeypatch.setenv("INFERTIDE_CACHE", str(tmp_path))
    assert project_cache() == tmp_path


@pytest.mark.parametrize(("args", "env", "tuned"), [
    ([], {}, True),
    ([], {"INFERTIDE_PYTHON_GC": "default"}, False),
    (["--python-gc", "tuned"], {"INFERTIDE_PYTHON_GC": "default"}, True),
    (["--python-gc", "default"], {}, False),
])
def test_worker_garbage_collector_flag_beats_environment(args: list[str], env: dict[str, str], tuned: bool,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[dict] = []
    monkeypatch.setattr("topologies.host.app.run_worker", lambda topology, **kwargs: runs.append(kwargs))
    res = runner.invoke(app, ["worker", *args], env=env)
    assert res.exit_code == 0, res.output
    assert [r["settle_heap"] for r in runs] == [tuned]


def test_worker_garbage_collector_takes_only_its_two_modes() -> None:
    res = runner.invoke(app, ["worker", "--python-gc", "off"])
    assert res.exit_code == 2 and "off" in res.output
    res = runner.invoke(app, ["config"], env={"INFERTIDE_PYTHON_GC": "off"})
    assert res.exit_code == 2 and "python_gc" in res.output
