"""Failed-login throttling on an injected clock, and refusals that take as long for unknown
names as for known ones."""

import hashlib

from engine.console.people import users as users_module
from engine.console.people.logins import MAX_WAIT_S, LoginThrottle
from engine.console.people.users import SCRYPT_N, SCRYPT_P, SCRYPT_R, Users


def test_a_name_waits_twice_as_long_after_each_failure_past_five():
    throttle = LoginThrottle()
    for n in range(5):
        assert throttle.wait_s("bob", "10.0.0.1", now=100.0 + n) == 0
        throttle.failed("bob", "10.0.0.1", now=100.0 + n)
    assert throttle.wait_s("bob", "10.0.0.2", now=104.5) == 0.5  # the name, from anywhere
    assert throttle.wait_s("carol", "10.0.0.1", now=104.5) == 0  # the address is not yet
    throttle.failed("bob", "10.0.0.1", now=106.0)
    assert throttle.wait_s("bob", "10.0.0.1", now=106.0) == 2.0
    throttle.succeeded("bob")
    assert throttle.wait_s("bob", "10.0.0.9", now=106.0) == 0


def test_one_address_trying_many_names_is_slowed_and_the_wait_is_capped():
    throttle = LoginThrottle()
    for n in range(40):
        throttle.failed(f"guess{n}", "10.6.6.6", now=1000.0)
    assert throttle.wait_s("anyone", "10.6.6.6", now=1000.0) == MAX_WAIT_S
    assert throttle.wait_s("anyone", "10.0.0.1", now=1000.0) == 0
    assert throttle.wait_s("anyone", "10.6.6.6", now=1000.0 + 2 * 3600) == 0  # it fades


def test_an_unknown_name_takes_as_long_to_refuse_as_a_known_one(monkeypatch):
    """Both refusals run the same scrypt (before, an unknown name returned at once). The work is
    compared, not the clock: a busy machine made a timed comparison fail."""
    users = Users()
    users.add_logins([("alice", "alice-secret", "admin")])
    runs = []
    real_scrypt = hashlib.scrypt

    def counted(password, *, salt, n, r, p, **kwargs):
        runs.append((len(salt), n, r, p))
        return real_scrypt(password, salt=salt, n=n, r=r, p=p, **kwargs)

    monkeypatch.setattr(users_module.hashlib, "scrypt", counted)

    def work(name: str) -> list:
        runs.clear()
        assert not users.authenticate(name, "wrong")
        return list(runs)

    known = work("alice")
    assert known == [(16, SCRYPT_N, SCRYPT_R, SCRYPT_P)]
    assert work("nobody") == known
    assert users.authenticate("alice", "alice-secret")
