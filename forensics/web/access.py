"""Who may use the console and what they may do.

Roles, each allowed what the one before it may: ``viewer`` (read), ``analyst`` (label alerts),
``admin`` (promote and roll back models). Users come from ``web.users``: a password (argon2
hash) for the browser, a token (sha256) for scripts. With no users configured the console
serves only on a loopback address and every visitor has ``web.local_role``.

State changes are CSRF-safe: they are JSON POSTs (a cross-site form cannot send one without a
preflight we never grant) carrying ``X-CSRF-Token`` equal to the token in the visitor's signed,
HttpOnly, SameSite=Strict session cookie, and their ``Origin``, when sent, must be this host.
Requests with a bearer token carry no ambient credential and need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.requests import Request

from forensics.config import WebSettings, WebUser
from forensics.errors import ConfigError

ROLES = ("viewer", "analyst", "admin")
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
_hasher = PasswordHasher()
# Verified against when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    via: str  # "session", "token" or "local"

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_password(password: str) -> str:
    """An argon2id hash for ``web.users[].password_hash``."""
    return _hasher.hash(password)


def token_digest(token: str) -> str:
    """sha256 hex of an API token, for ``web.users[].token_sha256``."""
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(cfg: WebSettings) -> None:
    """Refuse (ConfigError, one line) to serve beyond loopback without anyone to sign in."""
    if not is_loopback(cfg.host) and not any(u.password_hash or u.token_sha256 for u in cfg.users):
        raise ConfigError(
            f"web.host is {cfg.host}, not a loopback address: configure web.users with passwords or tokens "
            "(see README, 'The console') before serving on other interfaces"
        )


def allowed_hosts(cfg: WebSettings) -> list[str]:
    """Host header values the app answers (a loopback console refuses other names: DNS rebinding)."""
    if is_loopback(cfg.host):
        return sorted({*LOOPBACK_NAMES, cfg.host, *cfg.allowed_hosts})
    return cfg.allowed_hosts or ["*"]


class Access:
    """Authentication and authorisation against ``web.users``."""

    def __init__(self, cfg: WebSettings):
        self.cfg = cfg
        self.users: dict[str, WebUser] = {u.name: u for u in cfg.users}

    @property
    def open(self) -> bool:
        """No users: every (loopback) visitor is ``local`` with ``web.local_role``."""
        return not self.users

    def login(self, name: str, password: str) -> WebUser | None:
        user = self.users.get(name)
        digest = user.password_hash if user and user.password_hash else _DUMMY_HASH
        try:
            ok = _hasher.verify(digest, password)
        except (VerificationError, InvalidHashError):
            ok = False
        return user if ok and user is not None and user.password_hash else None

    def principal(self, request: Request) -> Principal | None:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            digest = token_digest(auth[7:].strip())
            for u in self.users.values():
                if u.token_sha256 and hmac.compare_digest(u.token_sha256, digest):
                    return Principal(u.name, u.role, "token")
            return None
        if self.open:
            return Principal("local", self.cfg.local_role, "local") if self.cfg.local_role else None
        name = request.session.get("user")
        user = self.users.get(name) if isinstance(name, str) else None
        # The role is read from the settings on every request: a changed role applies at once.
        return Principal(user.name, user.role, "session") if user and user.password_hash else None

    @staticmethod
    def csrf_token(request: Request) -> str:
        token = request.session.get("csrf")
        if not isinstance(token, str):
            token = request.session["csrf"] = secrets.token_urlsafe(24)
        return token

    @staticmethod
    def same_origin(request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:  # not sent by older browsers on same-origin requests; the CSRF token still is
            return True
        host = request.headers.get("host", "")
        return origin in (f"http://{host}", f"https://{host}")

    def csrf_ok(self, request: Request, principal: Principal) -> bool:
        if principal.via == "token":
            return True
        if not self.same_origin(request):
            return False
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return False
        sent = request.headers.get("x-csrf-token", "")
        token = request.session.get("csrf")
        return isinstance(token, str) and bool(sent) and hmac.compare_digest(sent, token)
