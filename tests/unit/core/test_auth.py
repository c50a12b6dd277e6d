"""Password hashes, server proofs and login throttling."""

from __future__ import annotations

import pytest

from crdtmds.core import auth
from crdtmds.errors import AuthenticationFailed, InvalidParameter, TooManyRequests
from tests.helpers.clock import FakeClock


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


def _fail(throttle: auth.LoginThrottle, address: str, user: str) -> None:
    throttle.begin(address, user).failed()


def test_login_throttle_locks_out_with_growing_delay() -> None:
    clock = FakeClock()
    throttle = auth.LoginThrottle(limit=3, base_delay=1.0, max_delay=8.0, clock=clock)
    for _ in range(3):
        _fail(throttle, "10.0.0.1", "alice")
    clock.now = 100.5
    with pytest.raises(TooManyRequests) as caught:
        throttle.begin("10.0.0.1", "alice")
    assert caught.value.code == "err_too_many_requests"
    throttle.begin("10.0.0.2", "alice").failed()  # another address has its own count
    clock.now = 101.1
    _fail(throttle, "10.0.0.1", "alice")  # one more try after the wait, then twice as long
    clock.now = 102.9
    with pytest.raises(TooManyRequests):
        throttle.begin("10.0.0.1", "alice")
    clock.now = 103.2
    throttle.begin("10.0.0.1", "alice").succeeded()
    throttle.begin("10.0.0.1", "alice").succeeded()  # a success clears the user's count


def test_a_good_login_of_another_user_does_not_reset_the_failures() -> None:
    """Finding 1: 4 wrong guesses for admin, 1 good login of another account, repeated."""
    throttle = auth.LoginThrottle(limit=5, clock=FakeClock())
    refused = 0
    for _ in range(25):
        for _ in range(4):
            try:
                _fail(throttle, "10.0.0.1", "admin")
            except TooManyRequests:
                refused += 1
        throttle.begin("10.0.0.1", "reader").succeeded()
    assert throttle.failures("pair:10.0.0.1:admin") == 5
    assert refused == 95
    assert throttle.checks == 5 + 25


def test_attempts_in_flight_use_up_the_allowance() -> None:
    """Finding 2: the limit holds for attempts that have not failed yet."""
    throttle = auth.LoginThrottle(limit=5, clock=FakeClock())
    attempts = [throttle.begin("10.0.0.1", "admin") for _ in range(5)]
    with pytest.raises(TooManyRequests):
        throttle.begin("10.0.0.1", "admin")
    for attempt in attempts:
        attempt.failed()
    with pytest.raises(TooManyRequests):
        throttle.begin("10.0.0.1", "admin")
    assert throttle.checks == 5


def test_per_user_and_per_address_limits_span_addresses_and_names() -> None:
    throttle = auth.LoginThrottle(limit=2, user_limit=4, address_limit=6, clock=FakeClock())
    for address in ("10.0.0.1", "10.0.0.2"):
        for _ in range(2):
            _fail(throttle, address, "admin")
    with pytest.raises(TooManyRequests):
        throttle.begin("10.0.0.3", "admin")  # four addresses' worth over all addresses
    for name in ("x1", "x1", "x2", "x2", "x3", "x3"):
        _fail(throttle, "10.0.0.9", name)
    with pytest.raises(TooManyRequests):
        throttle.begin("10.0.0.9", "someone-else")  # the address sprayed names


def test_a_device_token_has_a_throttle_of_its_own() -> None:
    """Finding 3: failures without the token never lock out its holder."""
    secret = "c1.s3cret-s3cret-s3cret"
    token = auth.device_token(secret, "admin")
    device = auth.device_key(secret, "admin", token)
    assert device is not None
    assert auth.device_key(secret, "eve", token) is None
    assert auth.device_key("c1.other-secret-value", "admin", token) is None
    assert auth.device_key(secret, "admin", "forged.token") is None
    throttle = auth.LoginThrottle(limit=3, clock=FakeClock())
    for _ in range(3):
        _fail(throttle, "10.0.0.1", "admin")
    with pytest.raises(TooManyRequests):
        throttle.begin("10.0.0.1", "admin")
    throttle.begin("10.0.0.1", "admin", device).succeeded()


def test_idle_keys_are_forgotten() -> None:
    clock = FakeClock()
    throttle = auth.LoginThrottle(limit=5, forget_after=60.0, max_keys=7, clock=clock)
    for name in ("a", "b", "c"):
        _fail(throttle, "10.0.0.1", name)
    assert throttle.failures("user:a") == 1
    _fail(throttle, "10.0.0.1", "e")
    _fail(throttle, "10.0.0.1", "e")  # past max_keys: the oldest idle keys went first
    assert throttle.failures("pair:10.0.0.1:a") == 0 and throttle.failures("user:e") == 2
    clock.now += 61
    throttle.begin("10.0.0.1", "d").succeeded()
    assert throttle.failures("user:a") == 0 and throttle.failures("address:10.0.0.1") == 0


def test_new_passwords_need_a_length_and_must_not_be_the_user_name() -> None:
    """Finding 10."""
    assert auth.check_new_password("admin", "a-long-passphrase") == "a-long-passphrase"
    for weak in ("x", "short-pw", "", None):
        with pytest.raises(InvalidParameter):
            auth.check_new_password("admin", weak)
    with pytest.raises(InvalidParameter, match="user name"):
        auth.check_new_password("administrator-1", "Administrator-1")
    with pytest.raises(InvalidParameter):
        auth.check_new_password("admin", "twenty-characters-xx", min_length=21)
    assert auth.check_new_password("admin", "pw1", min_length=3) == "pw1"
