"""Signed tokens for agents and supervisors (JWT via PyJWT).

The embedded stack signs with HS256 and a shared secret (``PEAKROUTE_GATEWAY_JWT_SECRET``, or
one generated once into ``<state_dir>/gateway.secret``); production verifies an identity
provider's RS256 tokens with its public key or JWKS endpoint (docs/AGENT_PROTOCOL.md).
"""

from __future__ import annotations

import enum
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from router.decode import ID_RE
from router.errors import PeakrouteError
from router.events import Id
from router.gateway.jwks import KeySet, UnknownKey
from router.settings import Settings, env_name

SECRET_FILE = "gateway.secret"
LEEWAY_S = 5  # clock skew tolerated between the signer and this gateway


class Role(enum.StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"


class AuthError(PeakrouteError):
    """A token that cannot be used: ``code`` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for."""

    subject: Id  # the agent's (or supervisor's) id
    role: Role
    domain: Id
    expires_at_ms: int
    issued_at_ms: int = 0


def hs256_secret(settings: Settings) -> str:
    """The HS256 secret: the setting, else the stack's own (generated once, mode 0600)."""
    if settings.gateway_jwt_secret:
        return settings.gateway_jwt_secret
    path = Path(settings.state_dir) / SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def issue(settings: Settings, subject: str, role: Role, domain: str,
          ttl_s: float | None = None, now_s: float | None = None) -> str:
    """An HS256 token (the embedded stack's own issuer); production IdPs issue their own."""
    if settings.gateway_jwt_algorithm != "HS256":
        raise PeakrouteError(
            f"{env_name('gateway_jwt_algorithm')}={settings.gateway_jwt_algorithm}: tokens come "
            "from your identity provider; `peakroute agents token` signs HS256 tokens only")
    now = time.time() if now_s is None else now_s
    claims = {
        "sub": subject, "role": role.value, "dom": domain, "iss": settings.gateway_jwt_issuer,
        "aud": settings.gateway_jwt_audience, "iat": int(now),
        "exp": int(now + (settings.gateway_token_ttl_s if ttl_s is None else ttl_s)),
    }
    return jwt.encode(claims, hs256_secret(settings), algorithm="HS256")


class Verifier:
    """Verifies tokens with the configured algorithm and key (made once per gateway)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithm = settings.gateway_jwt_algorithm
        self.jwks: KeySet | None = None
        self._key: Any = None
        if self.algorithm == "HS256":
            self._key = hs256_secret(settings)
        elif settings.gateway_jwks_url:
            self.jwks = KeySet(settings.gateway_jwks_url, settings.gateway_jwks_ttl_s,
                               settings.gateway_jwks_timeout_s,
                               settings.gateway_jwks_unknown_kid_s)
        elif settings.gateway_jwt_public_key:
            self._key = Path(settings.gateway_jwt_public_key).read_text()
        else:
            raise PeakrouteError(
                f"RS256 needs {env_name('gateway_jwt_public_key')} (a PEM file) or "
                f"{env_name('gateway_jwks_url')}")

    async def check(self, token: object, default_domain: str) -> Identity:
        """The token verified; with a JWKS endpoint its key is fetched without blocking the
        event loop (router/gateway/jwks.py)."""
        if self.jwks is None:
            return self.verify(token, default_domain)
        _check_shape(token)
        assert isinstance(token, str)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = await self.jwks.key(kid if isinstance(kid, str) else None)
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", f"the token is not valid ({type(exc).__name__})"
                            ) from None
        except UnknownKey:
            raise AuthError("invalid_token", "the token is not valid (its signing key is not "
                            "the identity provider's)") from None
        return self._decode(token, key, default_domain)

    def verify(self, token: object, default_domain: str) -> Identity:
        """The token verified with a configured key (HS256 secret or PEM file)."""
        if self.jwks is not None:
            raise PeakrouteError("a JWKS verifier checks tokens with `await check(...)`")
        _check_shape(token)
        assert isinstance(token, str)
        return self._decode(token, self._key, default_domain)

    async def aclose(self) -> None:
        if self.jwks is not None:
            await self.jwks.aclose()

    def _decode(self, token: str, key: Any, default_domain: str) -> Identity:
        try:
            claims = jwt.decode(
                token, key, algorithms=[self.algorithm],
                audience=self.settings.gateway_jwt_audience,
                issuer=self.settings.gateway_jwt_issuer, leeway=LEEWAY_S,
                options={"require": ["sub", "exp", "iat"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired; sign in again") from None
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", f"the token is not valid ({type(exc).__name__})"
                            ) from None
        return identity_from_claims(claims, default_domain)


def _check_shape(token: object) -> None:
    if not isinstance(token, str) or not token or len(token) > 8192:
        raise AuthError("unauthenticated", "hello needs a token")


def identity_from_claims(claims: dict[str, Any], default_domain: str) -> Identity:
    sub, dom = claims.get("sub"), claims.get("dom", default_domain)
    try:
        role = Role(claims.get("role", Role.AGENT.value))
    except ValueError:
        raise AuthError("invalid_token", "the token's role is neither agent nor supervisor"
                        ) from None
    if not (isinstance(sub, str) and ID_RE.fullmatch(sub) and isinstance(dom, str)
            and ID_RE.fullmatch(dom)):
        raise AuthError("invalid_token", "the token's subject or domain is not a valid id")
    return Identity(sub, role, dom, int(claims["exp"]) * 1000, int(claims["iat"]) * 1000)
