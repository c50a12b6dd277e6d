"""Password hashes, server proofs and login throttling."""

from __future__ import annotations

import pytest

from crdtmds import auth
from crdtmds.errors import AuthenticationFailed, TooManyRequests


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = auth.hash_password("correct horse")
    assert stored.startswith("scrypt$")
    assert "correct horse" not in stored
    assert auth.verify_password("correct horse", stored)
    assert not auth.verify_password("wrong horse", stored)


def test_same_password_hashes_differently_each_time() -> None:
    assert auth.hash_password("pw") != auth.hash_password("pw")


@pytest.mark.parametrize(
    "stored", ["", "plain", "scrypt$x$y$z$salt$hash", None, 42, "md5$a$b$c$d$e"]
)
def test_malformed_stored_hash_never_verifies(stored: object) -> None:
    assert not auth.verify_password("pw", stored)


def test_empty_password_is_refused() -> None:
    with pytest.raises(AuthenticationFailed):
        auth.hash_password("")


def test_secret_carries_the_cluster_id() -> None:
    secret = auth.new_secret("CLUSTER")
    assert auth.cluster_id_of_secret(secret) == "CLUSTER"
    with pytest.raises(AuthenticationFailed):
        auth.cluster_id_of_secret("no-dot-here")


def _verifier(secret: str = "c1.s3cret-s3cret-s3cret") -> auth.NonceVerifier:
    return auth.NonceVerifier(secret, "c1")


def test_server_credentials_round_trip_and_verify() -> None:
    creds = auth.ServerCredentials.create("c1.s3cret-s3cret-s3cret", "c1", "eu1")
    meta = creds.to_metadata()
    assert "s3cret" not in repr(meta)
    _verifier().verify(auth.ServerCredentials.from_metadata(meta))


def test_wrong_secret_is_refused() -> None:
    creds = auth.ServerCredentials.create("c1.another-secret-value", "c1", "eu1")
    with pytest.raises(AuthenticationFailed, match="wrong cluster secret"):
        _verifier().verify(creds)


def test_replayed_credentials_are_refused() -> None:
    creds = auth.ServerCredentials.create("c1.s3cret-s3cret-s3cret", "c1", "eu1")
    verifier = _verifier()
    verifier.verify(creds)
    with pytest.raises(AuthenticationFailed, match="replayed"):
        verifier.verify(creds)


def test_credentials_of_another_cluster_are_refused() -> None:
    creds = auth.ServerCredentials.create("c1.s3cret-s3cret-s3cret", "c2", "eu1")
    with pytest.raises(AuthenticationFailed, match="another cluster"):
        _verifier().verify(creds)


def test_stale_credentials_are_refused() -> None:
    creds = auth.ServerCredentials.create("c1.s3cret-s3cret-s3cret", "c1", "eu1")
    with pytest.raises(AuthenticationFailed, match="expired"):
        _verifier().verify(creds, now=creds.timestamp + auth.PROOF_WINDOW_SECONDS + 1)


@pytest.mark.parametrize("meta", [None, {}, {"cluster": "c1"}, {"timestamp": "soon"}, "x"])
def test_malformed_credentials_are_refused(meta: object) -> None:
    with pytest.raises(AuthenticationFailed):
        auth.ServerCredentials.from_metadata(meta)


def test_answer_proof_depends_on_the_dialer_nonce() -> None:
    one = auth.answer_proof("secret", "c1", "eu1", "nonce-a")
    assert one == auth.answer_proof("secret", "c1", "eu1", "nonce-a")
    assert one != auth.answer_proof("secret", "c1", "eu1", "nonce-b")
    assert one != auth.answer_proof("other", "c1", "eu1", "nonce-a")


def test_login_throttle_locks_out_with_growing_delay() -> None:
    throttle = auth.LoginThrottle(limit=3, base_delay=1.0, max_delay=8.0)
    for _ in range(2):
        throttle.failed("10.0.0.1", now=100.0)
    throttle.check("10.0.0.1", now=100.0)
    throttle.failed("10.0.0.1", now=100.0)
    with pytest.raises(TooManyRequests) as caught:
        throttle.check("10.0.0.1", now=100.5)
    assert caught.value.code == "err_too_many_requests"
    throttle.check("10.0.0.1", now=101.1)
    throttle.check("10.0.0.2", now=100.5)
    throttle.failed("10.0.0.1", now=102.0)
    with pytest.raises(TooManyRequests):
        throttle.check("10.0.0.1", now=103.5)
    throttle.check("10.0.0.1", now=104.1)
    throttle.succeeded("10.0.0.1")
    throttle.check("10.0.0.1", now=104.1)
