"""Public-key tokens with real RSA keys (``cryptography`` comes with ``pyjwt[crypto]``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hub.app.auth import AuthError, AuthErrorCode, AuthSettings, verify_token
from hub.app.config import Config, ConfigError


def _key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


PRIVATE, PUBLIC = _key()
OTHER_PRIVATE, _ = _key()
SETTINGS = AuthSettings(algorithms=("RS256",), public_keys={"k1": PUBLIC})


def _claims() -> dict[str, object]:
    return {"sub": "alice", "email": "a@example.com", "exp": int(time.time()) + 60}


def test_a_token_signed_with_the_private_key_is_accepted() -> None:
    token = jwt.encode(_claims(), PRIVATE, algorithm="RS256", headers={"kid": "k1"})
    identity = verify_token(token, SETTINGS)
    assert (identity.user_id, identity.email) == ("alice", "a@example.com")


@pytest.mark.parametrize(
    ("case", "token"),
    [
        (
            "signed with another private key",
            jwt.encode(_claims(), OTHER_PRIVATE, algorithm="RS256", headers={"kid": "k1"}),
        ),
        (
            "a kid that points nowhere",
            jwt.encode(_claims(), PRIVATE, algorithm="RS256", headers={"kid": "k9"}),
        ),
    ],
)
def test_forged_public_key_tokens_are_invalid(case: str, token: str) -> None:
    with pytest.raises(AuthError) as refused:
        verify_token(token, SETTINGS)
    assert refused.value.code is AuthErrorCode.TOKEN_INVALID, case


def test_hs256_keyed_with_the_public_pem_is_refused() -> None:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "k1"}).encode())
    body = b64(json.dumps(_claims()).encode())
    mac = hmac.new(PUBLIC.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(AuthError) as refused:
        verify_token(f"{head}.{body}.{b64(mac)}", SETTINGS)
    assert refused.value.code is AuthErrorCode.TOKEN_INVALID


# -- configured from the environment, as `hub serve` is ---------------------------------------


def test_rs256_is_configured_with_key_files(tmp_path: Path) -> None:
    (tmp_path / "k1.pem").write_text(PUBLIC)
    config = Config.from_env(
        {
            "HUB_ENV": "production",
            "HUB_JWT_ALGORITHMS": "RS256",
            "HUB_JWT_PUBLIC_KEYS": f"k1={tmp_path / 'k1.pem'}",
            "HUB_EMIT_TOKEN": "e",
            "WS_ALLOWED_ORIGINS": "https://app.example",
        }
    ).check()  # no JWT_ACCESS_SECRET needed without an HMAC algorithm
    settings = config.auth_settings()
    token = jwt.encode(_claims(), PRIVATE, algorithm="RS256", headers={"kid": "k1"})
    assert verify_token(token, settings).user_id == "alice"
    forged = jwt.encode(_claims(), OTHER_PRIVATE, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(AuthError):
        verify_token(forged, settings)


@pytest.mark.parametrize(
    ("keys", "fragment"),
    [
        ("", "RS256 needs public_keys"),
        ("k1", "kid=/path/key.pem"),
        ("k1=/nonexistent/key.pem", "cannot read the key 'k1'"),
    ],
)
def test_rs256_without_usable_keys_is_a_clear_config_error(keys: str, fragment: str) -> None:
    config = Config.from_env({"HUB_JWT_ALGORITHMS": "RS256", "HUB_JWT_PUBLIC_KEYS": keys})
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        config.check().auth_settings()


def test_hub_serve_with_rs256_and_no_keys_says_so_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"HUB_DATABASE": str(tmp_path / "hub.sqlite3"), "HUB_JWT_ALGORITHMS": "RS256"})
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli", "serve", "--port", "0"],
        env=env,
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done
    assert "RS256 needs public_keys" in done.stderr
    assert "Traceback" not in done.stderr
