"""Authentication at connect: find the client's JWT, verify it, and say who the client is.

Where the token comes from, first match wins (:func:`extract_token`):

1. the CONNECT payload, ``{"token": "..."}`` (socket.io-client's ``auth`` option);
2. the ``Authorization: Bearer ...`` header of the Engine.IO handshake;
3. the ``token`` query parameter of the handshake.

What a token must be (:func:`verify_token`), in the order it is checked:

* at most :data:`MAX_TOKEN_LENGTH` characters, three base64url segments, JSON objects inside;
* its header's ``alg`` is in the allowlist of :class:`AuthSettings`. ``none`` can never be
  listed, and an allowlist never mixes HMAC with public-key algorithms, so the key that checks
  a signature always belongs to the family the operator chose, whatever the header claims
  (RFC 8725 section 2.1, "algorithm confusion");
* its signature verifies under the settings' secret (HMAC) or under the public key its ``kid``
  header names (public-key algorithms; a token without ``kid`` is accepted only when exactly one
  key is configured). Keys are never taken from the token (``jwk``, ``jku``, ``x5u`` are ignored);
* ``iss`` and ``aud`` match when the settings name them; a token carrying ``aud`` is refused when
  the settings name no audience (RFC 7519 section 4.1.3);
* ``nbf`` and ``iat`` are not in the future, then ``exp`` is not in the past, all with the
  settings' leeway and against ``now``. Time claims are checked only after the signature, so a
  forged token never learns whether it would have been expired;
* a subject: ``sub``, else ``userId``; a non-empty string or an integer.

Every refusal is an :class:`AuthError`, whose code and message are meant for the client (a
CONNECT_ERROR's ``data``). A message never quotes the token, and an AuthError never chains the
library exception it replaces, so a logged traceback cannot leak the token either.
"""

from __future__ import annotations

import enum
import logging
import math
import time
import types
from collections.abc import Mapping
from typing import Any, Final

import attrs
import jwt
import jwt.algorithms
import jwt.utils
from jwt.types import Options

__all__ = [
    "MAX_TOKEN_LENGTH",
    "AuthError",
    "AuthErrorCode",
    "AuthSettings",
    "Identity",
    "extract_token",
    "mint_token",
    "verify_token",
]

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH: Final = 8192
"""Longer tokens are refused before they are parsed."""

# RFC 7518 section 3.1, the "alg" values for JWS, plus EdDSA (RFC 8037); all pyjwt knows.
_HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
_PUBLIC_KEY_ALGORITHMS: Final = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES256K",
        "ES384",
        "ES512",
        "EdDSA",
    }
)

# Claims mint_token writes itself; `extra` may not override them.
_MINTED_CLAIMS: Final = frozenset({"sub", "email", "iat", "exp", "iss", "aud"})

# pyjwt checks the signature, iss, aud and jti; we check the time claims against `now` and the
# subject (pyjwt would refuse an integer `sub`) ourselves.
_DECODE_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_sub": False,
    "verify_iss": True,
    "verify_aud": True,
    "verify_jti": True,
    "require": [],
}


def _freeze_keys(keys: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(keys))


@attrs.frozen
class AuthSettings:
    """How tokens are verified.

    Attributes:
        secret: the HMAC secret (``JWT_ACCESS_SECRET``); needed by ``HS*`` algorithms.
        algorithms: the allowlist of ``alg`` header values. Never ``none``, and never HMAC and
            public-key algorithms together.
        public_keys: key id (the ``kid`` header) to PEM public key; needed by ``RS*``, ``PS*``,
            ``ES*`` and ``EdDSA``. Verifying those needs the ``cryptography`` package.
        issuer: the ``iss`` every token must carry, or None not to check it.
        audience: the ``aud`` every token must include, or None to refuse tokens with an ``aud``.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.

    Raises:
        ValueError: at construction, when the settings are unsafe or incomplete (see above).
    """

    secret: str | None = None
    algorithms: tuple[str, ...] = ("HS256",)
    public_keys: Mapping[str, str] = attrs.field(factory=dict, converter=_freeze_keys)
    issuer: str | None = None
    audience: str | None = None
    leeway: float = 0.0

    def __attrs_post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("algorithms must list at least one algorithm")
        for algorithm in self.algorithms:
            if algorithm.lower() == "none":
                raise ValueError("the 'none' algorithm is never allowed")
            if algorithm not in _HMAC_ALGORITHMS | _PUBLIC_KEY_ALGORITHMS:
                raise ValueError(f"unknown JWT algorithm {algorithm!r}")
        hmac = [a for a in self.algorithms if a in _HMAC_ALGORITHMS]
        public = [a for a in self.algorithms if a in _PUBLIC_KEY_ALGORITHMS]
        if hmac and public:
            raise ValueError(
                f"algorithms mix HMAC ({', '.join(hmac)}) and public-key ({', '.join(public)}) "
                "algorithms: this allows algorithm confusion"
            )
        if hmac:
            if not self.secret:
                raise ValueError(f"{hmac[0]} needs a secret")
            secret = self.secret.encode()
            if jwt.utils.is_pem_format(secret) or jwt.utils.is_ssh_key(secret):
                raise ValueError("the HMAC secret looks like a PEM or SSH key")
        if public:
            if not self.public_keys:
                raise ValueError(f"{public[0]} needs public_keys")
            for kid, pem in self.public_keys.items():
                if not kid or not pem:
                    raise ValueError("public_keys needs non-empty key ids and keys")
        if not (math.isfinite(self.leeway) and self.leeway >= 0):
            raise ValueError("leeway must be a finite number of seconds, zero or more")
        if self.issuer == "" or self.audience == "":
            raise ValueError("issuer and audience must be None or non-empty")


@attrs.frozen
class Identity:
    """Who a verified token says the client is.

    Attributes:
        user_id: from ``sub``, else ``userId``; an integer claim is given as its decimal string.
        email: from ``email``, or None.
        expires_at: the token's ``exp``, epoch seconds, or None if it has none.
        claims: every claim of the token, read-only.
    """

    user_id: str
    email: str | None
    expires_at: float | None
    claims: Mapping[str, Any]


class AuthErrorCode(enum.StrEnum):
    """Why a connect was refused; the ``code`` of the CONNECT_ERROR's ``data``."""

    TOKEN_MISSING = "TOKEN_MISSING"
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    USER_NOT_FOUND = "USER_NOT_FOUND"


_DEFAULT_MESSAGES: Final = {
    AuthErrorCode.TOKEN_MISSING: "Authentication token missing",
    AuthErrorCode.TOKEN_INVALID: "Authentication token invalid",
    AuthErrorCode.TOKEN_EXPIRED: "Authentication token expired",
    AuthErrorCode.USER_NOT_FOUND: "User not found or disabled",
}


class AuthError(Exception):
    """A client could not be authenticated.

    Args:
        code: why.
        message: one line for the client; the code's default message when None. It must never
            contain the token.

    Attributes:
        code: why.
        message: one line, safe to send to the client and to log.
    """

    def __init__(self, code: AuthErrorCode, message: str | None = None) -> None:
        self.code = code
        self.message = message or _DEFAULT_MESSAGES[code]
        super().__init__(self.message)

    def payload(self) -> dict[str, Any]:
        """The ``data`` of the CONNECT_ERROR that refuses the client.

        Returns:
            ``{"code": ..., "message": ...}``.
        """
        return {"code": self.code.value, "message": self.message}


def _invalid(message: str) -> AuthError:
    return AuthError(AuthErrorCode.TOKEN_INVALID, message)


def _bearer(value: str) -> str | None:
    """The token of ``"Bearer <token>"`` (scheme case-insensitive, RFC 6750), else None."""
    parts = value.split(None, 1)
    if len(parts) == 2 and parts[0].lower() == "bearer":
        return parts[1].strip() or None
    return None


def extract_token(
    auth: Mapping[str, Any] | None, headers: Mapping[str, str], query: Mapping[str, str]
) -> str | None:
    """Find the client's token; the first place that has one wins.

    Args:
        auth: the CONNECT payload; its ``token`` is a bare token or ``"Bearer <token>"``.
        headers: the handshake's headers; ``Authorization: Bearer <token>`` (the header name in
            any case; other schemes are ignored).
        query: the handshake's query parameters; ``token``.

    Returns:
        The token, or None if there is none. Empty or blank values count as none.
    """
    if isinstance(auth, Mapping):
        value = auth.get("token")
        if isinstance(value, str) and value.strip():
            return _bearer(value) or value.strip()
    authorization = headers.get("authorization")
    if authorization is None:
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if authorization:
        token = _bearer(authorization)
        if token:
            return token
    value = query.get("token")
    if value and value.strip():
        return value.strip()
    return None


def _key_for(algorithm: str, header: Mapping[str, Any], settings: AuthSettings) -> str:
    """The key that checks a signature made with ``algorithm``, chosen by the settings."""
    if algorithm in _HMAC_ALGORITHMS:
        # Any kid is ignored: there is one secret.
        assert settings.secret is not None  # AuthSettings refuses HS* without a secret
        return settings.secret
    kid = header.get("kid")  # pyjwt has checked that it is a string, if present
    if kid is None:
        if len(settings.public_keys) == 1:
            return next(iter(settings.public_keys.values()))
        raise _invalid("Authentication token names no key")
    key = settings.public_keys.get(kid)
    if key is None:
        raise _invalid("Authentication token names an unknown key")
    return key


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate claim (RFC 7519 section 2: a JSON number of seconds), None if absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"Authentication token claim {name!r} is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double
        number = math.inf
    if not math.isfinite(number):
        raise _invalid(f"Authentication token claim {name!r} is not a number")
    return number


def _user_id(claims: Mapping[str, Any]) -> str:
    value = claims.get("sub")
    if value is None:
        value = claims.get("userId")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise _invalid("Authentication token has no subject")


def verify_token(token: str, settings: AuthSettings, *, now: float | None = None) -> Identity:
    """Verify a token and say whose it is (the rules are in the module's docstring).

    Args:
        token: the token as the client sent it.
        settings: how to verify it.
        now: the current time, epoch seconds; the system clock when None.

    Returns:
        The identity the token proves.

    Raises:
        AuthError: ``TOKEN_EXPIRED`` when its ``exp`` has passed (beyond the leeway), else
            ``TOKEN_INVALID`` for any other fault.
    """
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise _invalid("Authentication token malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _invalid("Authentication token malformed") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in settings.algorithms:
        raise _invalid("Authentication token algorithm not allowed")
    key = _key_for(algorithm, header, settings)
    if algorithm in _PUBLIC_KEY_ALGORITHMS and not jwt.algorithms.has_crypto:
        # pyjwt refuses such tokens (fail closed); say why, since the client cannot.
        log.error("cannot verify %s tokens: the 'cryptography' package is missing", algorithm)
    try:
        decoded = jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            options=_DECODE_OPTIONS,
            issuer=settings.issuer,
            audience=settings.audience,
        )
    except jwt.InvalidSignatureError:
        raise _invalid("Authentication token signature invalid") from None
    except jwt.InvalidIssuerError:
        raise _invalid("Authentication token issuer not accepted") from None
    except jwt.InvalidAudienceError:
        raise _invalid("Authentication token audience not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid(f"Authentication token lacks the {exc.claim!r} claim") from None
    except jwt.PyJWTError:
        raise _invalid("Authentication token invalid") from None
    claims: dict[str, Any] = decoded

    now = time.time() if now is None else now
    leeway = settings.leeway
    expires_at = _numeric_date(claims, "exp")
    not_before = _numeric_date(claims, "nbf")
    issued_at = _numeric_date(claims, "iat")
    # RFC 7519 4.1.5: "the current date/time MUST be after or equal to the not-before date/time"
    if not_before is not None and now + leeway < not_before:
        raise _invalid("Authentication token not valid yet")
    if issued_at is not None and now + leeway < issued_at:
        raise _invalid("Authentication token issued in the future")
    # RFC 7519 4.1.4: "the current date/time MUST be before the expiration date/time"
    if expires_at is not None and now - leeway >= expires_at:
        raise AuthError(AuthErrorCode.TOKEN_EXPIRED)

    email = claims.get("email")
    if email is not None and not isinstance(email, str):
        raise _invalid("Authentication token claim 'email' is not a string")
    return Identity(
        user_id=_user_id(claims),
        email=email or None,
        expires_at=expires_at,
        claims=types.MappingProxyType(claims),
    )


def mint_token(
    user_id: str,
    settings: AuthSettings,
    *,
    email: str | None = None,
    expires_in: float = 3600.0,
    now: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Make a token that :func:`verify_token` accepts, for development (``hub token``) and tests.

    It is signed with the settings' secret and the first HMAC algorithm of their allowlist, and
    carries ``sub``, ``iat``, ``exp`` (whole seconds), ``email`` when given, and ``iss`` and
    ``aud`` when the settings name them.

    Args:
        user_id: the ``sub``.
        settings: whose secret, algorithm, issuer and audience to use.
        email: the ``email`` claim, if any.
        expires_in: seconds from ``now`` to ``exp``; zero or less makes an expired token.
        now: the ``iat``, epoch seconds; the system clock when None.
        extra: more claims (``nbf``, ``roles``...); they may not replace the ones above.

    Returns:
        The compact JWT.

    Raises:
        ValueError: the settings allow no HMAC algorithm, ``user_id`` is empty, or ``extra``
            names a claim this function sets.
    """
    algorithm = next((a for a in settings.algorithms if a in _HMAC_ALGORITHMS), None)
    if algorithm is None or settings.secret is None:
        raise ValueError("mint_token needs settings with an HMAC algorithm and a secret")
    if not user_id:
        raise ValueError("user_id must not be empty")
    claims = dict(extra or {})
    clash = _MINTED_CLAIMS & claims.keys()
    if clash:
        raise ValueError(f"extra may not set {', '.join(sorted(clash))}")
    now = time.time() if now is None else now
    claims["sub"] = user_id
    claims["iat"] = int(now)
    claims["exp"] = int(now + expires_in)
    if email is not None:
        claims["email"] = email
    if settings.issuer is not None:
        claims["iss"] = settings.issuer
    if settings.audience is not None:
        claims["aud"] = settings.audience
    return jwt.encode(claims, settings.secret, algorithm=algorithm)
