"""Passwords, signed session cookies and CSRF tokens.

The signing secret is generated on first run and kept in ``<var>/secret_key`` (mode 0600), so cookies survive a
restart and no secret is ever in the code. The cookie carries only a signed session id. A signed-in session is a
row in the store (its user and CSRF token); an anonymous visitor's session is the cookie alone, its CSRF token
derived from the id with the secret, so visitors who never sign in write nothing to the store.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, URLSafeTimedSerializer

from museforge.io import atomic_write_text

SECRET_FILE = "secret_key"
COOKIE_NAME = "museforge_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
MIN_PASSWORD = 8

_hasher = PasswordHasher()


def load_or_create_secret(var_dir: Path) -> str:
    """The app's signing secret, created once with 256 random bits."""
    path = Path(var_dir) / SECRET_FILE
    if path.is_file():
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) >= 32:
            return secret
    secret = secrets.token_urlsafe(32)
    atomic_write_text(path, secret + "\n")
    os.chmod(path, 0o600)
    return secret


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_new_credentials(username: str, password: str) -> None:
    """Refuse names that would be confusing in URLs and passwords too short to resist guessing."""
    if not 3 <= len(username) <= 32 or not all(ch.isalnum() or ch in "_.-" for ch in username):
        raise ValueError("a user name is 3 to 32 letters, digits, '_', '.' or '-'")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise ValueError("a password may have at most 1024 characters")


class CookieSigner:
    """Signs session ids into cookie values and checks them back, with an age limit."""

    def __init__(self, secret: str, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="museforge-session")
        self._csrf_key = hashlib.sha256(f"museforge-csrf:{secret}".encode()).digest()
        self.max_age_s = max_age_s

    def dumps(self, session_id: str) -> str:
        return self._serializer.dumps(session_id)

    def loads(self, value: str) -> tuple[str, float] | None:
        """The session id of a cookie and when it was signed, or None for a forged or expired one."""
        try:
            session_id, signed = self._serializer.loads(value, max_age=self.max_age_s, return_timestamp=True)
        except BadSignature:
            return None
        if not isinstance(session_id, str) or not isinstance(signed, datetime):
            return None
        return session_id, signed.timestamp()

    def csrf_for(self, session_id: str) -> str:
        """The CSRF token of an anonymous session: only the server, holding the secret, can compute it."""
        return hmac.new(self._csrf_key, session_id.encode(), hashlib.sha256).hexdigest()


def csrf_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one a form or header sent."""
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())
