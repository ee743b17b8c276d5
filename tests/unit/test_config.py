"""Config: defaults, the generated sample, validation messages, environment overrides."""

from pathlib import Path

import pytest

from homeserver.config import ConfigError, HomeserverConfig, load_config
from homeserver.config.sample import render_sample

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "homeserver.yaml"
    path.write_text(text)
    return str(path)


def test_sample_file_is_current() -> None:
    """homeserver.yaml.sample is generated from the option definitions; regenerate it with
    `homeserver generate-config --sample > homeserver.yaml.sample`."""
    assert (ROOT / "homeserver.yaml.sample").read_text() == render_sample()


def test_sample_loads_to_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, render_sample()), environ={})
    defaults = load_config(None, environ={})
    assert config.listeners == defaults.listeners
    assert config.rc_login == defaults.rc_login
    assert config.admission_control == defaults.admission_control
    assert config.database.name == "sqlite3"


def test_no_config_gives_the_embedded_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config.server_name == "localhost"
    assert config.database.name == "sqlite3"
    assert config.database.args["database"] == str(tmp_path / "data" / "homeserver.db")
    assert (config.listeners[0].bind_addresses, config.listeners[0].port) == (["127.0.0.1"], 8008)
    assert config.client_baseurl == "http://localhost:8008/"


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "signing_key_path: keys/k.key\n"), environ={})
    assert config.signing_key_path == str(tmp_path / "keys" / "k.key")


@pytest.mark.parametrize(
    "text, key, message",
    [
        ("serve_name: x\n", "serve_name", "unknown option"),
        ("bcrypt_rounds: many\n", "bcrypt_rounds", "expected a whole number, got str 'many'"),
        ("bcrypt_rounds: 2\n", "bcrypt_rounds", "must be at least 4"),
        ("enable_registration: 'yes'\n", "enable_registration", "expected true or false"),
        ("listeners: [{port: 70000}]\n", "listeners[0].port", "must be at most 65535"),
        (
            "listeners: [{port: 1, resources: [{names: [chat]}]}]\n",
            "listeners[0].resources[0].names",
            "unknown resource 'chat'",
        ),
        ("rc_login: {address: {per_second: fast}}\n", "rc_login.address.per_second", "expected a number"),
        ("database: {name: mysql}\n", "database.name", "must be one of sqlite3, psycopg2"),
        ("database: {name: psycopg2, args: {dsn: 'mysql://x'}}\n", "database.args.dsn", "must be a URL"),
        (
            "database: {name: psycopg2, args: {dsn: 'postgresql://h/db?nosuch=1'}}\n",
            "database.args.dsn",
            "not a valid PostgreSQL URL",
        ),
        ("database: {name: sqlite3, args: {databse: x}}\n", "database.args.databse", "unknown argument"),
        ("database: {args: {cp_max: 0}}\n", "database.args.cp_max", "at least 1"),
        ("max_request_body_size: lots\n", "max_request_body_size", "expected a size"),
        ("server_name: 'bad name'\n", "server_name", "not a valid server name"),
        ("listeners: [{tls: true}]\n", "tls_certificate_path", "required"),
        ("logging: {loggers: {homeserver: LOUD}}\n", "logging.loggers.homeserver", "unknown level"),
        ("- a list\n", "", "top level must be a mapping"),
        ("a: [unclosed\n", "", "not valid YAML"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert caught.value.source == path
    assert caught.value.key == key
    assert message in caught.value.message


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"), environ={})


def test_sizes_accept_suffixes(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "max_request_body_size: 512K\n"), environ={}).max_request_body_size == 524288


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server_name: file.example\n")
    env = {
        "HOMESERVER_SERVER_NAME": "env.example",
        "HOMESERVER_RC_LOGIN__ADDRESS__BURST_COUNT": "9",
        "HOMESERVER_DATABASE__NAME": "psycopg2",
        "HOMESERVER_DATABASE__ARGS": "{dsn: 'postgresql://u@db:5432/hs'}",
        "UNRELATED": "x",
    }
    config = load_config(path, environ=env)
    assert config.server_name == "env.example"
    assert config.rc_login.address.burst_count == 9
    assert config.database.args == {"dsn": "postgresql://u@db:5432/hs"}


def test_environment_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"HOMESERVER_BCRYPT_ROUNDS": "abc"})
    assert caught.value.key == "bcrypt_rounds"


def test_default_config_is_valid() -> None:
    HomeserverConfig().validate()
