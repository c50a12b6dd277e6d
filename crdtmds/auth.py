"""Credentials: administrator password hashes, server-to-server proofs, login throttling.

Passwords are stored as scrypt hashes in the cluster document, so a login works on every
server. Servers prove knowledge of the cluster secret with an HMAC over a fresh nonce and
a timestamp; the secret itself never crosses the wire, and a captured proof cannot be
replayed (each nonce is accepted once within the clock window).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from crdtmds.errors import AuthenticationFailed, TooManyRequests

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
PROOF_WINDOW_SECONDS = 300.0


def new_secret(cluster_id: str) -> str:
    """A fresh cluster secret: `<cluster id>.<256 random bits>`.

    The cluster id travels inside the secret so that `join` needs nothing else; only the
    random part is secret, and neither part is ever sent to another server.
    """
    return f"{cluster_id}.{secrets.token_urlsafe(32)}"


def cluster_id_of_secret(secret: str) -> str:
    cluster_id, dot, token = secret.partition(".")
    if not dot or not cluster_id or len(token) < 16:
        raise AuthenticationFailed("malformed cluster secret")
    return cluster_id


def new_token() -> str:
    return secrets.token_urlsafe(24)


# ---------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` with a fresh random salt."""
    if not isinstance(password, str) or not password:
        raise AuthenticationFailed("a password must be a non-empty string")
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return "$".join(
        ["scrypt", str(SCRYPT_N), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: Any, stored: Any) -> bool:
    """Whether `password` matches `stored`; False for any malformed input."""
    if not isinstance(password, str) or not isinstance(stored, str):
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=2**26)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# ---------------------------------------------------------------- server proofs


def server_proof(secret: str, *parts: str) -> str:
    """HMAC-SHA256 of the cluster secret over `parts` joined unambiguously."""
    message = "\x1f".join(parts).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class ServerCredentials:
    """What a dialing server puts in its join metadata under `crdtmds`."""

    cluster_id: str
    server: str
    nonce: str
    timestamp: float
    proof: str

    @classmethod
    def create(cls, secret: str, cluster_id: str, server: str) -> ServerCredentials:
        nonce = secrets.token_hex(16)
        now = time.time()
        proof = server_proof(secret, "join", cluster_id, server, nonce, repr(now))
        return cls(cluster_id, server, nonce, now, proof)

    def to_metadata(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster_id,
            "server": self.server,
            "nonce": self.nonce,
            "timestamp": self.timestamp,
            "proof": self.proof,
        }

    @classmethod
    def from_metadata(cls, meta: Any) -> ServerCredentials:
        if not isinstance(meta, dict):
            raise AuthenticationFailed("missing server credentials")
        try:
            return cls(
                cluster_id=str(meta["cluster"]),
                server=str(meta["server"]),
                nonce=str(meta["nonce"]),
                timestamp=float(meta["timestamp"]),
                proof=str(meta["proof"]),
            )
        except (KeyError, TypeError, ValueError):
            raise AuthenticationFailed("malformed server credentials") from None


def answer_proof(secret: str, cluster_id: str, server: str, dialer_nonce: str) -> str:
    """The listener's proof, over the dialer's nonce, that it knows the secret too."""
    return server_proof(secret, "peer", cluster_id, server, dialer_nonce)


class NonceVerifier:
    """Checks server credentials and refuses any nonce seen within the clock window."""

    def __init__(self, secret: str, cluster_id: str, *, window: float = PROOF_WINDOW_SECONDS):
        self._secret = secret
        self._cluster_id = cluster_id
        self._window = window
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, creds: ServerCredentials, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._forget_older_than(now - self._window)
        if creds.cluster_id != self._cluster_id:
            raise AuthenticationFailed("server belongs to another cluster")
        if abs(now - creds.timestamp) > self._window:
            raise AuthenticationFailed("server credentials expired (check the clocks)")
        expected = server_proof(
            self._secret, "join", creds.cluster_id, creds.server, creds.nonce,
            repr(creds.timestamp),
        )  # fmt: skip
        if not hmac.compare_digest(expected, creds.proof):
            raise AuthenticationFailed("wrong cluster secret")
        if creds.nonce in self._seen:
            raise AuthenticationFailed("replayed server credentials")
        self._seen[creds.nonce] = creds.timestamp

    def _forget_older_than(self, limit: float) -> None:
        while self._seen and next(iter(self._seen.values())) < limit:
            self._seen.popitem(last=False)


# ---------------------------------------------------------------- login throttling


@dataclass(slots=True)
class _Failures:
    count: int = 0
    locked_until: float = 0.0


@dataclass(slots=True)
class LoginThrottle:
    """Failed logins per source: after `limit` failures the source waits, doubling each time."""

    limit: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0
    _by_source: dict[str, _Failures] = field(default_factory=dict)

    def check(self, source: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        state = self._by_source.get(source)
        if state is not None and state.locked_until > now:
            wait = state.locked_until - now
            raise TooManyRequests(
                f"too many failed logins; try again in {wait:.0f} s",
                details={"retry-after": round(wait, 1)},
            )

    def failed(self, source: str, *, now: float | None = None) -> None:
        now = time.time() if now is None else now
        state = self._by_source.setdefault(source, _Failures())
        state.count += 1
        if state.count >= self.limit:
            exponent = state.count - self.limit
            state.locked_until = now + min(self.max_delay, self.base_delay * 2**exponent)

    def succeeded(self, source: str) -> None:
        self._by_source.pop(source, None)
