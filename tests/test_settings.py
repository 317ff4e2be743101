"""Settings: precedence (CLI > environment > config file > default), errors, documentation."""
import pytest

import settings
from common import ROOT


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in settings.NAMES if f"| `{name}` |" not in readme]
    assert missing == []


def test_precedence_cli_over_environment_over_file_over_default(tmp_path):
    config = tmp_path / "n.toml"
    config.write_text('db = "file.db"\nport = 1111\nflush_interval = 7.5\nmax_flows = 10\n')
    env = {"NETTALLY_PORT": "2222", "NETTALLY_MAX_FLOWS": "20"}
    s = settings.build({"config": str(config), "max_flows": 30, "db": None}, environ=env)
    assert (s.db, s.port, s.flush_interval, s.max_flows) == ("file.db", 2222, 7.5, 30)
    assert settings.build({}, environ={}).port == 8321


def test_interfaces_from_the_environment_and_the_command_line():
    assert settings.build({}, environ={"NETTALLY_INTERFACES": "lo, eth0"}).interfaces == ("lo", "eth0")
    assert settings.build({"interfaces": ["veth0"]}, environ={}).interfaces == ("veth0",)


def test_web_user_defaults_to_the_sudo_user():
    assert settings.build({}, environ={"SUDO_USER": "alice"}).web_user == "alice"
    assert settings.build({}, environ={"SUDO_USER": "alice", "NETTALLY_WEB_USER": "bob"}).web_user == "bob"
    assert settings.build({}, environ={}).web_user == ""


@pytest.mark.parametrize("text, words", [
    ("port = 'x'", "bad setting"),
    ("nonsense = 1", "unknown setting 'nonsense'"),
    ("capture_backend = 'npcap'", "capture_backend must be one of auto, ring, pcap, not 'npcap'"),
    ('agent = "a\\u0007b"', "agent must be at most 64 printable characters"),
    (f"agent = '{'x' * 65}'", "agent must be at most 64 printable characters"),
    ("port = ", "config file"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, text, words):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(ValueError) as err:
        settings.build({"config": str(config)}, environ={})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_missing_config_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="config file .*missing.toml"):
        settings.build({"config": str(tmp_path / "missing.toml")}, environ={})


@pytest.mark.parametrize("cli, words", [
    ({"port": 99999}, "port must be between 1 and 65535"), ({"port": -1}, "port"), ({"count": -1}, "count"),
    ({"duration": -5.0}, "duration"), ({"max_flows": 0}, "max_flows"), ({"flush_interval": 0.0}, "flush_interval"),
])
def test_values_out_of_range_are_one_line_errors(cli, words):
    """Found in review: --port 99999 wrapped to another port, -c -1 counted nothing for ever."""
    with pytest.raises(ValueError, match=words):
        settings.build(cli, environ={})


def test_a_huge_ring_from_the_environment_is_refused():
    with pytest.raises(ValueError, match="ring_mb"):
        settings.build({}, environ={"NETTALLY_RING_MB": "100000"})
