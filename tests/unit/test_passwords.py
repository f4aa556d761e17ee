"""Password hashing parameters, legacy hashes, and the hashing and mail turns."""

from __future__ import annotations

import threading
import time

import bcrypt
import pytest

from service.errors import HashingBusy
from service.passwords import PasswordHasher, hash_password, verify_and_update
from service.turns import Turns


def test_new_hashes_use_owasps_argon2id_parameters() -> None:
    # OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1.
    assert hash_password("pw-123456").startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_a_current_hash_verifies_without_an_update() -> None:
    hashed = hash_password("pw-123456")
    assert verify_and_update("pw-123456", hashed) == (True, None)
    assert verify_and_update("pw-1234567", hashed) == (False, None)


def test_bcrypt_over_72_bytes_verifies_as_the_template_stored_it() -> None:
    password = "x" * 100
    legacy = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(4)).decode()
    ok, new = verify_and_update(password, legacy)
    assert ok and new is not None and verify_and_update(password, new) == (True, None)


def test_a_hash_in_no_known_format_never_matches() -> None:
    assert verify_and_update("pw", "plaintext-pw") == (False, None)


def test_verify_without_a_user_never_matches() -> None:
    assert PasswordHasher(concurrency=1, wait_s=0).verify("pw", None) == (False, None)


def test_turns_admit_concurrency_then_wait_then_refuse() -> None:
    turns = Turns(concurrency=1, wait_s=0.2, busy=HashingBusy)
    released = threading.Event()

    def hold() -> None:
        with turns.turn():
            released.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(HashingBusy), turns.turn():
        pass
    assert time.monotonic() - started >= 0.15  # it waited its bound first
    # A turn freed while waiting is taken.
    threading.Timer(0.05, released.set).start()
    with turns.turn():
        pass
    holder.join()
