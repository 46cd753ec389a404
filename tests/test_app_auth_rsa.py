"""Public-key tokens with real RSA keys (``cryptography`` comes with ``pyjwt[crypto]``)."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hub.app.auth import AuthError, AuthErrorCode, AuthSettings, verify_token


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
