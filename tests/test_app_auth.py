"""hub.app.auth: where the token is found, and every way a token is refused, table-driven.

Hostile tokens are built by hand (base64url JSON, HMAC by :mod:`hmac`) so that nothing in pyjwt
stands between the test and the bytes a client could send. RSA keys here are PEM-shaped
strings: enough to attempt HS/RS confusion, whose refusal must not depend on parsing the key
(tests/test_app_auth_rsa.py does it with real keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import traceback
from collections.abc import Mapping
from typing import Any

import pytest

import hub.app.auth
from hub.app.auth import (
    MAX_TOKEN_LENGTH,
    AuthError,
    AuthErrorCode,
    AuthSettings,
    Identity,
    extract_token,
    mint_token,
    verify_token,
)

NOW = 1_700_000_000.0
# 64 bytes: RFC 7518 3.2's minimum for HS512 (pyjwt warns below it)
SECRET = "test-secret-" + "0123456789abcdef" * 3 + "-tail"
OTHER_SECRET = "other-secret-" + "0123456789abcdef" * 3 + "-end"
FAKE_PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n"
    "-----END PUBLIC KEY-----\n"
)
OTHER_PEM = FAKE_PEM.replace("u1SU1", "x9QQ2")

HS = AuthSettings(secret=SECRET)
HS_ISS_AUD = AuthSettings(secret=SECRET, issuer="https://auth.example", audience="hub")
HS_LEEWAY = AuthSettings(secret=SECRET, leeway=10.0)
HS512 = AuthSettings(secret=SECRET, algorithms=("HS512",))
RS = AuthSettings(algorithms=("RS256",), public_keys={"k1": FAKE_PEM})
RS_TWO = AuthSettings(algorithms=("RS256",), public_keys={"k1": FAKE_PEM, "k2": OTHER_PEM})

HS256_HEADER: dict[str, Any] = {"alg": "HS256", "typ": "JWT"}
GOOD_CLAIMS: dict[str, Any] = {"sub": "u-1", "iat": int(NOW), "exp": int(NOW) + 3600}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: Mapping[str, Any], claims: object, key: str | None = None) -> str:
    """A compact JWT with the given header and claims, HMAC-SHA256-signed with ``key``, or
    with an empty signature when ``key`` is None."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b""
    if key is not None:
        signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def mint(settings: AuthSettings = HS, **kwargs: Any) -> str:
    return mint_token("u-1", settings, now=NOW, **kwargs)


def tamper(token: str) -> str:
    """The token with its payload swapped for another user's, signature kept."""
    header, _, signature = token.split(".")
    claims = b64(json.dumps({**GOOD_CLAIMS, "sub": "admin"}).encode())
    return f"{header}.{claims}.{signature}"


# -- extraction ---------------------------------------------------------------------------

# (id, auth, headers, query, expected)
EXTRACTION: list[
    tuple[str, Mapping[str, Any] | None, dict[str, str], dict[str, str], str | None]
] = [
    ("nothing", None, {}, {}, None),
    ("auth", {"token": "A"}, {}, {}, "A"),
    ("auth bearer", {"token": "Bearer A"}, {}, {}, "A"),
    ("auth bearer lower", {"token": "bearer   A "}, {}, {}, "A"),
    ("auth wins", {"token": "A"}, {"authorization": "Bearer H"}, {"token": "Q"}, "A"),
    ("header", None, {"authorization": "Bearer H"}, {}, "H"),
    ("header scheme any case", {}, {"authorization": "BEARER H"}, {}, "H"),
    ("header name any case", {}, {"Authorization": "Bearer H"}, {}, "H"),
    ("header wins over query", {}, {"authorization": "Bearer H"}, {"token": "Q"}, "H"),
    ("query", {}, {}, {"token": "Q"}, "Q"),
    ("empty auth token", {"token": ""}, {"authorization": "Bearer H"}, {}, "H"),
    ("blank auth token", {"token": "   "}, {}, {"token": "Q"}, "Q"),
    ("non-string auth token", {"token": 42}, {}, {"token": "Q"}, "Q"),
    ("auth without token", {"user": "x"}, {}, {"token": "Q"}, "Q"),
    ("basic scheme ignored", {}, {"authorization": "Basic dXNlcjpw"}, {"token": "Q"}, "Q"),
    ("bare header ignored", {}, {"authorization": "H"}, {"token": "Q"}, "Q"),
    ("empty bearer", {}, {"authorization": "Bearer "}, {"token": "Q"}, "Q"),
    ("empty header", {}, {"authorization": ""}, {"token": "Q"}, "Q"),
    ("empty query", {}, {}, {"token": ""}, None),
    ("blank query", {}, {}, {"token": " "}, None),
]


@pytest.mark.parametrize(
    ("auth", "headers", "query", "expected"),
    [case[1:] for case in EXTRACTION],
    ids=[case[0] for case in EXTRACTION],
)
def test_extract_token(
    auth: Mapping[str, Any] | None,
    headers: dict[str, str],
    query: dict[str, str],
    expected: str | None,
) -> None:
    assert extract_token(auth, headers, query) == expected


# -- refusals: the attack matrix ----------------------------------------------------------

EXPIRED = AuthErrorCode.TOKEN_EXPIRED
INVALID = AuthErrorCode.TOKEN_INVALID

# (id, token, settings, code, fragment of the message)
REFUSALS: list[tuple[str, str, AuthSettings, AuthErrorCode, str]] = [
    # time
    ("expired", mint(expires_in=-60), HS, EXPIRED, "expired"),
    ("expires exactly now", mint(expires_in=0), HS, EXPIRED, "expired"),
    ("expired beyond leeway", mint(expires_in=-11), HS_LEEWAY, EXPIRED, "expired"),
    ("nbf in the future", mint(extra={"nbf": NOW + 60}), HS, INVALID, "not valid yet"),
    ("nbf beyond leeway", mint(extra={"nbf": NOW + 11}), HS_LEEWAY, INVALID, "not valid yet"),
    (
        "iat in the future",
        craft(HS256_HEADER, {**GOOD_CLAIMS, "iat": NOW + 60}, SECRET),
        HS,
        INVALID,
        "issued in the future",
    ),
    (
        "exp not a number",
        craft(HS256_HEADER, {**GOOD_CLAIMS, "exp": str(NOW + 60)}, SECRET),
        HS,
        INVALID,
        "'exp' is not a number",
    ),
    (
        "exp a boolean",
        craft(HS256_HEADER, {**GOOD_CLAIMS, "exp": True}, SECRET),
        HS,
        INVALID,
        "'exp' is not a number",
    ),
    (
        "exp beyond a double",
        craft(HS256_HEADER, {**GOOD_CLAIMS, "exp": 10**400}, SECRET),
        HS,
        INVALID,
        "'exp' is not a number",
    ),
    # alg none, every spelling, with and without a signature
    ("alg none", craft({"alg": "none", "typ": "JWT"}, GOOD_CLAIMS), HS, INVALID, "algorithm"),
    ("alg None", craft({"alg": "None"}, GOOD_CLAIMS), HS, INVALID, "algorithm"),
    ("alg NONE", craft({"alg": "NONE"}, GOOD_CLAIMS), HS, INVALID, "algorithm"),
    ("alg none, rs", craft({"alg": "none", "kid": "k1"}, GOOD_CLAIMS), RS, INVALID, "algorithm"),
    ("alg none signed", craft({"alg": "none"}, GOOD_CLAIMS, SECRET), HS, INVALID, "algorithm"),
    ("alg missing", craft({"typ": "JWT"}, GOOD_CLAIMS, SECRET), HS, INVALID, "algorithm"),
    ("alg empty", craft({"alg": ""}, GOOD_CLAIMS, SECRET), HS, INVALID, "algorithm"),
    ("alg not a string", craft({"alg": ["HS256"]}, GOOD_CLAIMS, SECRET), HS, INVALID, "algorithm"),
    # signature
    ("wrong secret", mint(AuthSettings(secret=OTHER_SECRET)), HS, INVALID, "signature"),
    ("tampered payload", tamper(mint()), HS, INVALID, "signature"),
    ("signature stripped", mint().rsplit(".", 1)[0] + ".", HS, INVALID, "signature"),
    ("HS512 not allowed", mint(HS512), HS, INVALID, "algorithm"),
    ("HS256 not allowed", mint(), HS512, INVALID, "algorithm"),
    # HS/RS confusion, both directions
    (
        "HS256 keyed with the RSA PEM, RS256 only",
        craft(HS256_HEADER | {"kid": "k1"}, GOOD_CLAIMS, FAKE_PEM),
        RS,
        INVALID,
        "algorithm",
    ),
    (
        "HS256 keyed with the RSA PEM, no kid",
        craft(HS256_HEADER, GOOD_CLAIMS, FAKE_PEM),
        RS,
        INVALID,
        "algorithm",
    ),
    (
        "RS256 to HS256 only",
        craft({"alg": "RS256", "kid": "k1"}, GOOD_CLAIMS, SECRET),
        HS,
        INVALID,
        "algorithm",
    ),
    (
        "RS256 unsigned to HS256 only",
        craft({"alg": "RS256"}, GOOD_CLAIMS),
        HS,
        INVALID,
        "algorithm",
    ),
    # the key is not a real key and the signature is garbage
    (
        "RS256 forged signature",
        craft({"alg": "RS256", "kid": "k1"}, GOOD_CLAIMS, FAKE_PEM),
        RS,
        INVALID,
        "invalid",
    ),
    # key ids
    (
        "kid points nowhere",
        craft({"alg": "RS256", "kid": "k9"}, GOOD_CLAIMS, FAKE_PEM),
        RS,
        INVALID,
        "unknown key",
    ),
    (
        "kid points nowhere, two keys",
        craft({"alg": "RS256", "kid": "../k1"}, GOOD_CLAIMS),
        RS_TWO,
        INVALID,
        "unknown key",
    ),
    (
        "no kid, two keys",
        craft({"alg": "RS256"}, GOOD_CLAIMS, FAKE_PEM),
        RS_TWO,
        INVALID,
        "names no key",
    ),
    ("kid not a string", craft({"alg": "RS256", "kid": 1}, GOOD_CLAIMS), RS, INVALID, "malformed"),
    # issuer and audience
    (
        "wrong issuer",
        mint(AuthSettings(secret=SECRET, issuer="https://evil.example", audience="hub")),
        HS_ISS_AUD,
        INVALID,
        "issuer",
    ),
    (
        "missing issuer",
        mint(AuthSettings(secret=SECRET, audience="hub")),
        HS_ISS_AUD,
        INVALID,
        "'iss'",
    ),
    (
        "wrong audience",
        mint(AuthSettings(secret=SECRET, issuer="https://auth.example", audience="billing")),
        HS_ISS_AUD,
        INVALID,
        "audience",
    ),
    (
        "missing audience",
        mint(AuthSettings(secret=SECRET, issuer="https://auth.example")),
        HS_ISS_AUD,
        INVALID,
        "'aud'",
    ),
    (
        "audience nobody asked for",
        mint(AuthSettings(secret=SECRET, audience="hub")),
        HS,
        INVALID,
        "audience",
    ),
    # malformed
    ("garbage", "abc", HS, INVALID, "malformed"),
    ("three garbage segments", "a.b.c", HS, INVALID, "malformed"),
    ("four segments", mint() + ".x", HS, INVALID, "malformed"),
    ("header not json", f"{b64(b'{nope')}.{b64(b'{}')}.", HS, INVALID, "malformed"),
    ("header not an object", f"{b64(b'[1]')}.{b64(b'{}')}.", HS, INVALID, "malformed"),
    ("payload not an object", craft(HS256_HEADER, [1], SECRET), HS, INVALID, "invalid"),
    ("too long", "x" * (MAX_TOKEN_LENGTH + 1), HS, INVALID, "malformed"),
    ("empty", "", HS, INVALID, "malformed"),
    # subject and email
    ("no sub", craft(HS256_HEADER, {"exp": int(NOW) + 60}, SECRET), HS, INVALID, "subject"),
    ("empty sub", craft(HS256_HEADER, {"sub": ""}, SECRET), HS, INVALID, "subject"),
    ("sub a list", craft(HS256_HEADER, {"sub": ["u-1"]}, SECRET), HS, INVALID, "subject"),
    ("sub a boolean", craft(HS256_HEADER, {"sub": True}, SECRET), HS, INVALID, "subject"),
    ("sub null, no userId", craft(HS256_HEADER, {"sub": None}, SECRET), HS, INVALID, "subject"),
    ("userId an object", craft(HS256_HEADER, {"userId": {}}, SECRET), HS, INVALID, "subject"),
    (
        "email a number",
        craft(HS256_HEADER, {"sub": "u-1", "email": 7}, SECRET),
        HS,
        INVALID,
        "'email'",
    ),
]


@pytest.mark.parametrize(
    ("token", "settings", "code", "fragment"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_refusals(token: str, settings: AuthSettings, code: AuthErrorCode, fragment: str) -> None:
    with pytest.raises(AuthError) as caught:
        verify_token(token, settings, now=NOW)
    error = caught.value
    assert error.code is code
    assert fragment in error.message
    # Nothing a client or a log sees quotes the token, nor chains pyjwt's exception.
    assert error.payload() == {"code": code.value, "message": error.message}
    if len(token) >= 8:
        traceback_text = "".join(traceback.format_exception(error))
        shown_all = (error.message, str(error), repr(error), json.dumps(error.payload()))
        for shown in (*shown_all, traceback_text):
            assert token not in shown
            for segment in token.split("."):
                assert len(segment) < 8 or segment not in shown
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_refusals_never_log_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    for _, token, settings, _, _ in REFUSALS:
        with pytest.raises(AuthError):
            verify_token(token, settings, now=NOW)
    for record in caplog.records:
        for _, token, _, _, _ in REFUSALS:
            assert len(token) < 8 or token not in record.getMessage()


def test_expiry_is_checked_after_the_signature() -> None:
    """A forged, expired token is told it is invalid, not that it has expired."""
    forged = mint(AuthSettings(secret=OTHER_SECRET), expires_in=-60)
    with pytest.raises(AuthError) as caught:
        verify_token(forged, HS, now=NOW)
    assert caught.value.code is INVALID


# -- acceptance ---------------------------------------------------------------------------

# (id, token, settings, user_id, email, expires_at)
ACCEPTED: list[tuple[str, str, AuthSettings, str, str | None, float | None]] = [
    ("minted", mint(), HS, "u-1", None, NOW + 3600),
    ("minted with email", mint(email="a@b.c"), HS, "u-1", "a@b.c", NOW + 3600),
    ("issuer and audience", mint(HS_ISS_AUD), HS_ISS_AUD, "u-1", None, NOW + 3600),
    (
        "audience in a list",
        craft(
            HS256_HEADER,
            {**GOOD_CLAIMS, "iss": "https://auth.example", "aud": ["other", "hub"]},
            SECRET,
        ),
        HS_ISS_AUD,
        "u-1",
        None,
        NOW + 3600,
    ),
    ("HS512", mint(HS512), HS512, "u-1", None, NOW + 3600),
    (
        "userId fallback",
        craft(HS256_HEADER, {"userId": "u-7", "email": "u@x.y"}, SECRET),
        HS,
        "u-7",
        "u@x.y",
        None,
    ),
    (
        "sub null, userId",
        craft(HS256_HEADER, {"sub": None, "userId": "u-7"}, SECRET),
        HS,
        "u-7",
        None,
        None,
    ),
    ("integer sub", craft(HS256_HEADER, {"sub": 42}, SECRET), HS, "42", None, None),
    ("integer userId", craft(HS256_HEADER, {"userId": 7}, SECRET), HS, "7", None, None),
    (
        "sub wins over userId",
        craft(HS256_HEADER, {"sub": "s", "userId": "u"}, SECRET),
        HS,
        "s",
        None,
        None,
    ),
    ("empty email", craft(HS256_HEADER, {"sub": "s", "email": ""}, SECRET), HS, "s", None, None),
    (
        "float exp",
        craft(HS256_HEADER, {"sub": "s", "exp": NOW + 0.5}, SECRET),
        HS,
        "s",
        None,
        NOW + 0.5,
    ),
    (
        "kid ignored for HMAC",
        craft(HS256_HEADER | {"kid": "whatever"}, GOOD_CLAIMS, SECRET),
        HS,
        "u-1",
        None,
        NOW + 3600,
    ),
    ("nbf now", mint(extra={"nbf": NOW}), HS, "u-1", None, NOW + 3600),
    # leeway: 10 s either way
    ("expired within leeway", mint(expires_in=-9), HS_LEEWAY, "u-1", None, NOW - 9),
    ("nbf within leeway", mint(extra={"nbf": NOW + 10}), HS_LEEWAY, "u-1", None, NOW + 3600),
    (
        "iat within leeway",
        craft(HS256_HEADER, {"sub": "s", "iat": NOW + 10}, SECRET),
        HS_LEEWAY,
        "s",
        None,
        None,
    ),
]


@pytest.mark.parametrize(
    ("token", "settings", "user_id", "email", "expires_at"),
    [case[1:] for case in ACCEPTED],
    ids=[case[0] for case in ACCEPTED],
)
def test_accepted(
    token: str,
    settings: AuthSettings,
    user_id: str,
    email: str | None,
    expires_at: float | None,
) -> None:
    identity = verify_token(token, settings, now=NOW)
    assert (identity.user_id, identity.email, identity.expires_at) == (user_id, email, expires_at)
    with pytest.raises(TypeError):
        identity.claims["sub"] = "admin"  # type: ignore[index]


def test_identity_carries_every_claim() -> None:
    token = mint(email="a@b.c", extra={"roles": ["admin"], "nbf": NOW})
    identity = verify_token(token, HS, now=NOW)
    assert identity == Identity(
        user_id="u-1",
        email="a@b.c",
        expires_at=NOW + 3600,
        claims={
            "roles": ["admin"],
            "nbf": NOW,
            "sub": "u-1",
            "iat": int(NOW),
            "exp": int(NOW) + 3600,
            "email": "a@b.c",
        },
    )


def test_now_defaults_to_the_clock() -> None:
    assert verify_token(mint_token("u-1", HS), HS).user_id == "u-1"
    with pytest.raises(AuthError) as caught:
        verify_token(mint(), HS)  # minted in November 2023, for an hour
    assert caught.value.code is EXPIRED


# -- minting ------------------------------------------------------------------------------


def test_mint_token_claims() -> None:
    token = mint_token("u-1", HS_ISS_AUD, email="a@b.c", expires_in=60, now=NOW + 0.7)
    claims = verify_token(token, HS_ISS_AUD, now=NOW).claims
    assert dict(claims) == {
        "sub": "u-1",
        "iat": int(NOW),
        "exp": int(NOW) + 60,
        "email": "a@b.c",
        "iss": "https://auth.example",
        "aud": "hub",
    }
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "HS256"
    assert json.loads(base64.urlsafe_b64decode(mint(HS512).split(".")[0] + "=="))["alg"] == "HS512"


MINT_ERRORS: list[tuple[str, str, AuthSettings, dict[str, Any], str]] = [
    ("public-key settings", "u-1", RS, {}, "HMAC"),
    ("empty user id", "", HS, {}, "user_id"),
    ("extra sets sub", "u-1", HS, {"sub": "admin"}, "sub"),
    ("extra sets exp and aud", "u-1", HS, {"exp": 1, "aud": "x"}, "aud, exp"),
]


@pytest.mark.parametrize(
    ("user_id", "settings", "extra", "fragment"),
    [case[1:] for case in MINT_ERRORS],
    ids=[case[0] for case in MINT_ERRORS],
)
def test_mint_token_errors(
    user_id: str, settings: AuthSettings, extra: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment):
        mint_token(user_id, settings, extra=extra)


# -- settings -----------------------------------------------------------------------------

# (id, keyword arguments, fragment of the error)
BAD_SETTINGS: list[tuple[str, dict[str, Any], str]] = [
    ("none", {"secret": SECRET, "algorithms": ("none",)}, "'none'"),
    ("NONE", {"secret": SECRET, "algorithms": ("NONE",)}, "'none'"),
    ("none among others", {"secret": SECRET, "algorithms": ("HS256", "none")}, "'none'"),
    ("empty allowlist", {"secret": SECRET, "algorithms": ()}, "at least one"),
    ("unknown algorithm", {"secret": SECRET, "algorithms": ("HS999",)}, "unknown"),
    ("lower-case name", {"secret": SECRET, "algorithms": ("hs256",)}, "unknown"),
    (
        "HS and RS mixed",
        {"secret": SECRET, "algorithms": ("HS256", "RS256"), "public_keys": {"k1": FAKE_PEM}},
        "confusion",
    ),
    (
        "HS and ES mixed",
        {"secret": SECRET, "algorithms": ("ES256", "HS512"), "public_keys": {"k1": FAKE_PEM}},
        "confusion",
    ),
    ("HS without secret", {}, "secret"),
    ("HS with empty secret", {"secret": ""}, "secret"),
    ("HS keyed with a PEM", {"secret": FAKE_PEM}, "PEM"),
    ("HS keyed with an SSH key", {"secret": "ssh-rsa AAAAB3NzaC1yc2E"}, "SSH"),
    ("RS without keys", {"algorithms": ("RS256",)}, "public_keys"),
    ("RS with empty kid", {"algorithms": ("RS256",), "public_keys": {"": FAKE_PEM}}, "key ids"),
    ("RS with empty key", {"algorithms": ("RS256",), "public_keys": {"k1": ""}}, "key ids"),
    ("negative leeway", {"secret": SECRET, "leeway": -1.0}, "leeway"),
    ("infinite leeway", {"secret": SECRET, "leeway": math.inf}, "leeway"),
    ("nan leeway", {"secret": SECRET, "leeway": math.nan}, "leeway"),
    ("empty issuer", {"secret": SECRET, "issuer": ""}, "issuer"),
    ("empty audience", {"secret": SECRET, "audience": ""}, "audience"),
]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [case[1:] for case in BAD_SETTINGS],
    ids=[case[0] for case in BAD_SETTINGS],
)
def test_settings_validation(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        AuthSettings(**kwargs)


def test_settings_public_keys_are_frozen() -> None:
    keys = {"k1": FAKE_PEM}
    settings = AuthSettings(algorithms=("RS256", "ES256"), public_keys=keys)
    keys["k2"] = OTHER_PEM
    assert dict(settings.public_keys) == {"k1": FAKE_PEM}
    with pytest.raises(TypeError):
        settings.public_keys["k2"] = OTHER_PEM  # type: ignore[index]
    assert AuthSettings(secret=SECRET).public_keys == {}


# -- errors -------------------------------------------------------------------------------


def test_error_codes_and_default_messages() -> None:
    assert [code.value for code in AuthErrorCode] == [code.name for code in AuthErrorCode]
    assert {code.value for code in AuthErrorCode} == {
        "TOKEN_MISSING",
        "TOKEN_INVALID",
        "TOKEN_EXPIRED",
        "USER_NOT_FOUND",
    }
    for code in AuthErrorCode:
        error = AuthError(code)
        assert error.message
        assert str(error) == error.message
        assert error.payload() == {"code": code.value, "message": error.message}
    custom = AuthError(AuthErrorCode.USER_NOT_FOUND, "unknown or disabled user")
    assert custom.payload() == {"code": "USER_NOT_FOUND", "message": "unknown or disabled user"}


def test_public_names() -> None:
    assert sorted(hub.app.auth.__all__) == [
        "AuthError",
        "AuthErrorCode",
        "AuthSettings",
        "Identity",
        "MAX_TOKEN_LENGTH",
        "extract_token",
        "mint_token",
        "verify_token",
    ]
