"""hub.app.config: what the environment sets, what the flags override, what production refuses,
and which origins each environment lets in, table-driven."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from hub.app.config import DEV_EMIT_TOKEN, DEV_JWT_SECRET, Config, ConfigError, Environment

PRODUCTION_ORIGINS = ("https://app.example.com", "https://admin.example.com")

# Every variable Config.from_env reads, each set to a value unlike the default.
FULL_ENV: dict[str, str] = {
    "HUB_HOST": "0.0.0.0",
    "HUB_PORT": "4100",
    "HUB_PATH": "/rt/",
    "HUB_INTERNAL_HOST": "10.0.0.5",
    "HUB_INTERNAL_PORT": "4101",
    "HUB_DATABASE": "/var/lib/hub/access.sqlite3",
    "HUB_ACCESS_HOOK_URL": "http://backend:8000/hub-access",
    "HUB_ACCESS_HOOK_TOKEN": "hook-token",
    "JWT_ACCESS_SECRET": "jwt-secret",
    "HUB_JWT_ALGORITHMS": "HS512, HS256",
    "HUB_JWT_ISSUER": "https://auth.example.com",
    "HUB_JWT_AUDIENCE": "hub",
    "HUB_EMIT_TOKEN": "emit-token",
    "WS_ALLOWED_ORIGINS": " https://app.example.com , https://admin.example.com,, ",
    "HUB_PING_INTERVAL": "10.5",
    "HUB_PING_TIMEOUT": "7",
    "HUB_MAX_PAYLOAD": "2048",
    "HUB_TOKEN_WARNING": "60",
    "HUB_MAX_INTERNAL_BODY": "4096",
    "NODE_ENV": "production",
}

FULL_CONFIG = Config(
    env=Environment.PRODUCTION,
    host="0.0.0.0",
    port=4100,
    path="/rt/",
    internal_host="10.0.0.5",
    internal_port=4101,
    database="/var/lib/hub/access.sqlite3",
    access_hook_url="http://backend:8000/hub-access",
    access_hook_token="hook-token",
    jwt_secret="jwt-secret",
    jwt_algorithms=("HS512", "HS256"),
    jwt_issuer="https://auth.example.com",
    jwt_audience="hub",
    emit_token="emit-token",
    allowed_origins=PRODUCTION_ORIGINS,
    ping_interval=10.5,
    ping_timeout=7.0,
    max_payload=2048,
    token_warning=60.0,
    max_internal_body=4096,
)


# -- from_env ----------------------------------------------------------------------------------


def test_an_empty_environment_gives_the_defaults() -> None:
    assert Config.from_env({}) == Config()
    assert Config().env is Environment.DEVELOPMENT


def test_from_env_reads_every_variable() -> None:
    assert Config.from_env(FULL_ENV) == FULL_CONFIG


def test_empty_variables_are_ignored() -> None:
    environ = {name: "" for name in FULL_ENV}
    assert Config.from_env(environ) == Config()


def test_allowed_origins_are_a_comma_list_with_spaces_trimmed() -> None:
    config = Config.from_env({"WS_ALLOWED_ORIGINS": "http://a.test ,https://b.test:8443 , ,"})
    assert config.allowed_origins == ("http://a.test", "https://b.test:8443")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, Environment.DEVELOPMENT),
        ({"NODE_ENV": "production"}, Environment.PRODUCTION),
        ({"NODE_ENV": "development"}, Environment.DEVELOPMENT),
        ({"HUB_ENV": "production"}, Environment.PRODUCTION),
        ({"HUB_ENV": " Production "}, Environment.PRODUCTION),
        ({"HUB_ENV": "PRODUCTION", "NODE_ENV": "development"}, Environment.PRODUCTION),
        ({"HUB_ENV": "development", "NODE_ENV": "production"}, Environment.DEVELOPMENT),
        ({"HUB_ENV": "", "NODE_ENV": "production"}, Environment.PRODUCTION),
    ],
)
def test_hub_env_wins_over_node_env(environ: dict[str, str], expected: Environment) -> None:
    config = Config.from_env(environ)
    assert config.env is expected
    assert config.production is (expected is Environment.PRODUCTION)


def test_overrides_win_over_the_environment() -> None:
    config = Config.from_env(
        FULL_ENV,
        host="127.0.0.2",
        port=0,
        internal_port=0,
        database="other.sqlite3",
        env="development",
    )
    assert config == attrs.evolve(
        FULL_CONFIG,
        env=Environment.DEVELOPMENT,
        host="127.0.0.2",
        port=0,
        internal_port=0,
        database="other.sqlite3",
    )


def test_overrides_of_none_leave_the_environment_alone() -> None:
    config = Config.from_env(FULL_ENV, host=None, port=None, ping_interval=None)
    assert config == FULL_CONFIG


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HUB_PORT", "http"),
        ("HUB_PORT", "3000.5"),
        ("HUB_INTERNAL_PORT", "x"),
        ("HUB_MAX_PAYLOAD", "1MB"),
        ("HUB_MAX_INTERNAL_BODY", "1e6"),
        ("HUB_PING_INTERVAL", "25s"),
        ("HUB_PING_TIMEOUT", "twenty"),
        ("HUB_TOKEN_WARNING", "5 minutes"),
    ],
)
def test_a_malformed_number_is_refused_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({name: value})
    assert name in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # round(nan * 1000) in the open packet raises at every handshake.
        ("HUB_PING_INTERVAL", "nan"),
        ("HUB_PING_INTERVAL", "inf"),
        ("HUB_PING_INTERVAL", "-1"),
        ("HUB_PING_TIMEOUT", "nan"),
        ("HUB_PING_TIMEOUT", "-5"),
        ("HUB_TOKEN_WARNING", "nan"),
        # bind() raises OverflowError (not OSError): a traceback, not "hub: ..."
        ("HUB_PORT", "-1"),
        ("HUB_PORT", "65536"),
        ("HUB_INTERNAL_PORT", "70000"),
        ("HUB_MAX_PAYLOAD", "-1"),
        ("HUB_MAX_INTERNAL_BODY", "-1"),
    ],
)
def test_a_number_out_of_range_is_refused_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({name: value})
    assert name in str(caught.value)


@pytest.mark.parametrize("value", ["staging", "prod", "test", "dev"])
@pytest.mark.parametrize("variable", ["HUB_ENV", "NODE_ENV"])
def test_an_unknown_environment_is_refused_naming_the_variables(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_env({variable: value})
    message = str(caught.value)
    assert "HUB_ENV" in message
    assert "NODE_ENV" in message
    assert repr(value) in message


# -- check -------------------------------------------------------------------------------------

ALL_MISSING = ("JWT_ACCESS_SECRET", "HUB_EMIT_TOKEN", "WS_ALLOWED_ORIGINS")


@pytest.mark.parametrize(
    ("settings", "missing"),
    [
        ({}, ALL_MISSING),
        ({"jwt_secret": "s"}, ("HUB_EMIT_TOKEN", "WS_ALLOWED_ORIGINS")),
        ({"emit_token": "e"}, ("JWT_ACCESS_SECRET", "WS_ALLOWED_ORIGINS")),
        ({"allowed_origins": PRODUCTION_ORIGINS}, ("JWT_ACCESS_SECRET", "HUB_EMIT_TOKEN")),
        ({"jwt_secret": "s", "emit_token": "e"}, ("WS_ALLOWED_ORIGINS",)),
        ({"jwt_secret": "s", "allowed_origins": PRODUCTION_ORIGINS}, ("HUB_EMIT_TOKEN",)),
        ({"emit_token": "e", "allowed_origins": PRODUCTION_ORIGINS}, ("JWT_ACCESS_SECRET",)),
        ({"jwt_secret": "", "emit_token": "", "allowed_origins": ()}, ALL_MISSING),
    ],
)
def test_production_names_everything_missing(
    settings: dict[str, Any], missing: tuple[str, ...]
) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(env=Environment.PRODUCTION, **settings).check()
    message = str(caught.value)
    for name in ALL_MISSING:
        assert (name in message) is (name in missing), (name, message)


def test_production_complete_runs_as_configured() -> None:
    config = Config(
        env=Environment.PRODUCTION,
        jwt_secret="s",
        emit_token="e",
        allowed_origins=PRODUCTION_ORIGINS,
    )
    assert config.check() == config


def test_production_never_gets_the_development_secrets() -> None:
    checked = Config.from_env(FULL_ENV).check()
    assert checked.jwt_secret == "jwt-secret"
    assert checked.emit_token == "emit-token"


def test_development_fills_in_the_development_secret_and_token() -> None:
    checked = Config().check()
    assert checked.jwt_secret == DEV_JWT_SECRET
    assert checked.emit_token == DEV_EMIT_TOKEN
    assert checked == Config(jwt_secret=DEV_JWT_SECRET, emit_token=DEV_EMIT_TOKEN)


def test_development_keeps_a_secret_and_token_it_is_given() -> None:
    checked = Config(jwt_secret="mine", emit_token="also-mine").check()
    assert checked.jwt_secret == "mine"
    assert checked.emit_token == "also-mine"


# -- origin_allowed ----------------------------------------------------------------------------

DEV = Config(allowed_origins=("https://staging.example.com",))
PROD = Config(env=Environment.PRODUCTION, allowed_origins=PRODUCTION_ORIGINS)

LOCAL_ORIGINS = [
    "http://localhost",
    "https://localhost",
    "http://localhost:3000",
    "https://localhost:5173",
    "http://127.0.0.1",
    "http://127.0.0.1:8080",
    "https://127.0.0.1:443",
    "http://[::1]",
    "http://[::1]:3000",
    "https://[::1]:8443",
]

LOOK_ALIKES = [
    "http://localhost.evil.com",
    "http://localhost.evil.com:3000",
    "http://evil-localhost",
    "http://localhost@evil.com",
    "http://evil.com#localhost",
    "http://127.0.0.1.evil",
    "http://127.0.0.1.evil:3000",
    "http://127.0.0.10",
    "http://127.0.0.1x",
    "http://[::1].evil",
    "http://::1",
    "http://localhost:",
    "http://localhost:3000/",
    "http://localhost:3000/path",
    "http://localhost:abc",
    "http://localhost:3000 ",
    " http://localhost:3000",
    "ws://localhost:3000",
    "file://localhost",
    "localhost:3000",
    "//localhost:3000",
    "http://evil.com/http://localhost",
    "http://0.0.0.0:3000",
    "null",
    "",
]

LISTED = ["https://app.example.com", "https://admin.example.com"]

NOT_QUITE_LISTED = [
    "https://app.example.com/",
    "https://app.example.com:443",
    "http://app.example.com",
    "https://APP.example.com",
    "https://app.example.com.evil.com",
    "https://evil.app.example.com",
    "https://app.example.co",
    "https://staging.example.com",
]

ORIGIN_TABLE: list[tuple[Config, str, bool]] = [
    *[(DEV, origin, True) for origin in LOCAL_ORIGINS],
    *[(DEV, origin, False) for origin in LOOK_ALIKES],
    (DEV, "https://staging.example.com", True),
    (DEV, "https://staging.example.com:443", False),
    (DEV, "https://app.example.com", False),
    *[(PROD, origin, False) for origin in LOCAL_ORIGINS],
    *[(PROD, origin, False) for origin in LOOK_ALIKES],
    *[(PROD, origin, True) for origin in LISTED],
    *[(PROD, origin, False) for origin in NOT_QUITE_LISTED],
]


@pytest.mark.parametrize(
    ("config", "origin", "allowed"),
    ORIGIN_TABLE,
    ids=[f"{config.env}-{origin!r}" for config, origin, _ in ORIGIN_TABLE],
)
def test_origin_allowed(config: Config, origin: str, allowed: bool) -> None:
    assert config.origin_allowed(origin) is allowed


def test_production_may_list_a_local_origin_explicitly() -> None:
    config = Config(env=Environment.PRODUCTION, allowed_origins=("http://localhost:3000",))
    assert config.origin_allowed("http://localhost:3000")
    assert not config.origin_allowed("http://localhost:3001")
