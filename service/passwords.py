"""Password hashing: argon2id, and the template's bcrypt hashes verified and upgraded.

Parameters: OWASP's Password Storage Cheat Sheet recommends Argon2id with at
least 19 MiB of memory, 2 iterations and 1 degree of parallelism (m=19456,
t=2, p=1), the second of its five equivalent settings and the one its summary
names. Measured here: about 20 ms of CPU per hash (docs/sizing.md), against
about 160 ms for pwdlib's default (m=64 MiB, t=3, p=4) that Sluice used
before. A stored hash with other parameters is rehashed at the next login.

Users moved from fastapi/full-stack-fastapi-template may have bcrypt hashes
(`$2b$12$...`): they verify, and the login replaces them with argon2id.

In a request, hashing goes through `PasswordHasher`, which takes a turn of the
worker's hashing bound (service/turns.py) first.
"""

from __future__ import annotations

import logging

from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from service.errors import HashingBusy
from service.turns import Turns

log = logging.getLogger("sluice.passwords")

ARGON2 = Argon2Hasher(time_cost=2, memory_cost=19456, parallelism=1)
_BCRYPT = BcryptHasher()
# bcrypt reads at most 72 bytes of a password. The bcrypt the template hashed
# with ignored the rest; bcrypt 5 refuses longer input, so cut it as it did.
_BCRYPT_MAX_BYTES = 72
_hashes = PasswordHash((ARGON2, _BCRYPT))


def hash_password(password: str) -> str:
    return _hashes.hash(password)


def verify_and_update(password: str, hashed: str) -> tuple[bool, str | None]:
    """Whether `password` matches, and a new hash when the stored one should be replaced."""
    if _BCRYPT.identify(hashed):
        if not _BCRYPT.verify(password.encode()[:_BCRYPT_MAX_BYTES], hashed):
            return False, None
        return True, hash_password(password)
    try:
        return _hashes.verify_and_update(password, hashed)
    except UnknownHashError:
        log.warning("a stored password hash is in no known format; the login is refused")
        return False, None


# A valid hash to verify against when the user does not exist, so that a
# missing account takes as long as a wrong password.
_DUMMY_HASH = hash_password("sluice-timing-equaliser")


class PasswordHasher:
    """Hashing and verifying under this worker's hashing bound: 503 hashing_busy beyond it."""

    def __init__(self, *, concurrency: int, wait_s: float) -> None:
        self.turns = Turns(concurrency=concurrency, wait_s=wait_s, busy=HashingBusy)

    def hash(self, password: str) -> str:
        with self.turns.turn():
            return hash_password(password)

    def verify(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """(matches, replacement hash or None); `hashed=None` (no such user) never matches."""
        with self.turns.turn():
            if hashed is None:
                verify_and_update(password, _DUMMY_HASH)
                return False, None
            return verify_and_update(password, hashed)
