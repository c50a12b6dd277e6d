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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crdtmds.errors import AuthenticationFailed, InvalidParameter, TooManyRequests

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


STATUS_TOKEN_SECONDS = 120.0
"""How long a status token, issued by `show-status` to a login, opens the other
servers' full status."""


def status_token(secret: str, admin: str, *, now: float | None = None) -> str:
    """A short-lived token a server gives a logged-in `show-status`, so that the rest of
    `crdtmds status` can read the other servers' details without logging in on each."""
    issued = repr(time.time() if now is None else now)
    proof = server_proof(secret, "status", admin, issued)
    return f"{admin}\x1f{issued}\x1f{proof}"


def status_token_admin(secret: str, token: Any, *, now: float | None = None) -> str | None:
    """The administrator a valid, unexpired status token was issued to, else None."""
    if not isinstance(token, str) or token.count("\x1f") != 2:
        return None
    admin, issued, proof = token.split("\x1f")
    try:
        age = (time.time() if now is None else now) - float(issued)
    except ValueError:
        return None
    if not -5.0 <= age <= STATUS_TOKEN_SECONDS:
        return None
    if not hmac.compare_digest(proof, server_proof(secret, "status", admin, issued)):
        return None
    return admin


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


# ---------------------------------------------------------------- password policy

MIN_PASSWORD_LENGTH = 12


def check_new_password(user: str, password: Any, *, min_length: int = MIN_PASSWORD_LENGTH) -> str:
    """`password` if it may be set for `user`; refuses short ones and the user name itself.

    Every path that sets a password goes through here (init, add-administrator)."""
    if not isinstance(password, str) or not password:
        raise InvalidParameter("a password must be a non-empty string")
    if len(password) < min_length:
        raise InvalidParameter(f"a password needs at least {min_length} characters")
    if password.casefold() == user.casefold():
        raise InvalidParameter("a password must not be the user name")
    return password


# ---------------------------------------------------------------- device tokens


def device_token(secret: str, user: str) -> str:
    """Proof that this client once logged in as `user`: a nonce and an HMAC of the cluster
    secret over it, so every server of the cluster accepts it without shared state.

    It is no credential (the password is still needed); it only gives its holder a login
    throttle of its own, which an attacker without it cannot exhaust."""
    nonce = secrets.token_urlsafe(12)
    return f"{nonce}.{server_proof(secret, 'device', user, nonce)}"


def device_key(secret: str, user: str, token: Any) -> str | None:
    """The throttle key of a valid device token for `user`, else None."""
    if not isinstance(token, str):
        return None
    nonce, dot, proof = token.partition(".")
    if not dot or not nonce:
        return None
    if not hmac.compare_digest(proof, server_proof(secret, "device", user, nonce)):
        return None
    return f"device:{user}:{nonce}"


# ---------------------------------------------------------------- login throttling


@dataclass(slots=True)
class _Failures:
    count: int = 0
    pending: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


class LoginThrottle:
    """Failed logins counted per key, with a doubling wait once a key reaches its limit.

    A login attempt reserves itself under every key that applies before its password is
    hashed (`begin`), so parallel attempts cannot all pass a check made before any of them
    failed; `Attempt.failed` or `Attempt.succeeded` settles the reservation. Keys:

    - `(address, user)`: `limit` failures, then waits of `base_delay` doubling to `max_delay`;
    - `user`, over every address: `user_limit` failures;
    - `address`, over every user name: `address_limit` failures;
    - a device token (`device_key`): `limit` failures, and nothing else.

    An attempt with a valid device token is counted under its token only: attackers without
    it cannot lock its holder out. A success clears the keys of its own user, never the
    address's count of other users' failures. A key forgets after `forget_after` quiet
    seconds; at most `max_keys` idle keys are kept.
    """

    def __init__(
        self,
        limit: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        *,
        user_limit: int | None = None,
        address_limit: int | None = None,
        forget_after: float = 3600.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.user_limit = user_limit if user_limit is not None else 4 * limit
        self.address_limit = address_limit if address_limit is not None else 4 * limit
        self.forget_after = forget_after
        self.max_keys = max_keys
        self.clock = clock
        self.checks = 0
        """Attempts let through to a password check (for tests and monitoring)."""
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def begin(self, address: str, user: str, device: str | None = None) -> Attempt:
        """Reserve one attempt, or raise `TooManyRequests` if any of its keys must wait."""
        now = self.clock()
        self._forget(now)
        keys = self._keys_of(address, user, device)
        waits = [self._wait(key, limit, now) for key, limit in keys]
        if max(waits) > 0:
            raise TooManyRequests(
                f"too many failed logins; try again in {max(waits):.0f} s",
                details={"retry-after": round(max(waits), 1)},
            )
        for key, _ in keys:
            self._state(key).pending += 1
        self.checks += 1
        return Attempt(self, keys, user_keys=[k for k, _ in keys if k != _address_key(address)])

    def _keys_of(self, address: str, user: str, device: str | None) -> list[tuple[str, int]]:
        if device is not None:
            return [(device, self.limit)]
        return [
            (f"pair:{address}:{user}", self.limit),
            (f"user:{user}", self.user_limit),
            (_address_key(address), self.address_limit),
        ]

    def _wait(self, key: str, limit: int, now: float) -> float:
        """Seconds `key` must wait; in-flight attempts use up the allowance left."""
        state = self._keys.get(key)
        if state is None:
            return 0.0
        if state.locked_until > now:
            return state.locked_until - now
        if state.pending and state.count + state.pending >= limit:
            return self.base_delay  # another attempt's outcome decides the next wait
        return 0.0

    def _state(self, key: str) -> _Failures:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _Failures()
        return state

    def settle(self, keys: list[tuple[str, int]], user_keys: list[str], ok: bool) -> None:
        now = self.clock()
        for key, limit in keys:
            state = self._state(key)
            state.pending = max(0, state.pending - 1)
            if ok and key in user_keys:
                state.count, state.locked_until = 0, 0.0
            elif not ok:
                self._fail(key, state, limit, now)

    def _fail(self, key: str, state: _Failures, limit: int, now: float) -> None:
        state.count += 1
        state.last_failure = now
        self._keys.move_to_end(key)
        if state.count >= limit:
            delay = self.base_delay * 2 ** min(state.count - limit, 64)
            state.locked_until = now + min(self.max_delay, delay)

    def _forget(self, now: float) -> None:
        """Drop idle keys, oldest failure first: quiet for `forget_after`, or too many."""
        while self._keys:
            key, state = next(iter(self._keys.items()))
            idle = not state.pending and state.locked_until <= now
            stale = now - state.last_failure > self.forget_after
            if not idle or not (stale or len(self._keys) > self.max_keys):
                return
            del self._keys[key]

    def failures(self, key: str) -> int:
        """Failures counted under `key` (`pair:ADDR:USER`, `user:USER`, `address:ADDR`)."""
        state = self._keys.get(key)
        return state.count if state is not None else 0


def _address_key(address: str) -> str:
    return f"address:{address}"


@dataclass(slots=True)
class Attempt:
    """One reserved login attempt; settle it exactly once."""

    throttle: LoginThrottle
    keys: list[tuple[str, int]]
    user_keys: list[str]
    settled: bool = False

    def failed(self) -> None:
        self._settle(ok=False)

    def succeeded(self) -> None:
        self._settle(ok=True)

    def _settle(self, *, ok: bool) -> None:
        if not self.settled:
            self.settled = True
            self.throttle.settle(self.keys, self.user_keys, ok)
