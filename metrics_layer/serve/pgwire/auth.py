"""Users and password authentication (SCRAM-SHA-256, md5, cleartext, trust).

A user table maps names to secrets, written like PostgreSQL's pg_authid.rolpassword:
  * a plain password,
  * "md5" + md5(password + username) hex,
  * a SCRAM verifier "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>" (base64;
    `scram_verifier()` makes one), so configuration files need not hold clear passwords.

As in PostgreSQL, an unknown user is asked for a password like any other and then refused with
the same error, so that user names cannot be probed; md5 falls back to SCRAM for users whose
secret is a SCRAM verifier.

Failed logins are rate-limited (`LoginThrottle`): token buckets of failures per client address
and per user name (known or not: the same buckets, the same errors). An address that used up its
allowance is refused before any password exchange, with FATAL 53300 "too many failed login
attempts" until its bucket refills (as connection poolers refuse a client that keeps failing);
a user name that used up its allowance (failures from many addresses) has each further attempt
delayed, as PostgreSQL's auth_delay does, and refused with 53300 once the delay would exceed
`max_delay`. Successful logins never use the allowance (a pool opening many connections at
once logs in normally); the allowance is checked again right before each verification, in
the same step as counting its failure, so parallel attempts cannot all slip through.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import asyncio
import collections
import os
import threading
import time
from typing import Any, Awaitable, Callable

from scramp import ScramException, ScramMechanism

from . import protocol as p
from .backend import BackendError

AUTH_METHODS = ("scram-sha-256", "md5", "password", "trust")
SCRAM_ITERATIONS = 4096

AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 10, 11, 12
AUTH_CLEARTEXT, AUTH_MD5 = 3, 5

_MECH = ScramMechanism("SCRAM-SHA-256")

Send = Callable[[bytes], Awaitable[None]]
Receive = Callable[[], Awaitable[tuple[bytes, bytes]]]
ScramInfo = tuple[bytes, bytes, bytes, int]  # salt, stored key, server key, iterations


class AuthFailed(BackendError):
    def __init__(self, user: str, sqlstate: str = "28P01", message: str | None = None):
        super().__init__(message or f'password authentication failed for user "{user}"', sqlstate, severity="FATAL")


TOO_MANY_FAILURES = "53300"


class _Buckets:
    """Token buckets by key (address or user name): `burst` tokens, refilled at `per_minute`;
    at most `max_keys` keys kept (the least recently used go first), so memory stays bounded."""

    def __init__(self, burst: int, per_minute: float, max_keys: int = 10_000):
        self.burst = burst
        self.rate = per_minute / 60.0
        self.max_keys = max_keys
        self._tokens: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def level(self, key: str, now: float) -> float:
        tokens, at = self._tokens.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) * self.rate)

    def add(self, key: str, now: float, delta: float) -> float:
        tokens = self.level(key, now) + delta
        self._tokens[key] = (tokens, now)
        self._tokens.move_to_end(key)
        while len(self._tokens) > self.max_keys:
            self._tokens.popitem(last=False)
        return tokens

    def wait(self, tokens: float) -> float:
        """Seconds until a bucket at `tokens` holds a whole token again."""
        if tokens >= 1:
            return 0.0
        return (1 - tokens) / self.rate if self.rate > 0 else float("inf")


class LoginThrottle:
    """Rate limit for failed logins, per client address and per user name (see the module doc).

    `per_address` / `per_user`: (burst, per_minute) — failures allowed at once, and refilled per
    minute. `max_delay`: the longest an attempt for a user name over its allowance is held.

    Only failures use the allowance, so a connection pool that opens many connections at once
    logs in normally. The allowance is checked twice: before the exchange (a refused address
    costs no password work) and again just before the password is verified, in the same step
    as the verification and the counting of its failure (no await in between), so parallel
    attempts cannot all be verified before the first failure counts."""

    def __init__(self, per_address: tuple[int, float] = (10, 10.0), per_user: tuple[int, float] = (30, 30.0),
                 max_delay: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.addresses = _Buckets(*per_address)
        self.users = _Buckets(*per_user)
        self.max_delay = float(max_delay)
        self.clock = clock
        self._lock = threading.Lock()
        self.refused = 0   # attempts refused before a password exchange
        self.delayed = 0   # attempts held back for their user name

    def check_address(self, address: str) -> None:
        with self._lock:
            wait = self.addresses.wait(self.addresses.level(address, self.clock()))
            if wait > 0:
                self.refused += 1
        if wait > 0:
            raise AuthFailed("", TOO_MANY_FAILURES,
                             f"too many failed login attempts from this address; try again in {max(1, round(wait))} s")

    def user_delay(self, user: str) -> float:
        """Seconds to hold an attempt for `user` (0 within the allowance); raise when too long."""
        with self._lock:
            wait = self.users.wait(self.users.level(user, self.clock()))
            if wait > self.max_delay:
                self.refused += 1
            elif wait > 0:
                self.delayed += 1
        if wait > self.max_delay:
            raise AuthFailed(user, TOO_MANY_FAILURES,
                             f'too many failed login attempts for user "{user}"; try again in {max(1, round(wait))} s')
        return wait

    def gate(self, user: str, address: str) -> None:
        """Just before a verification: refuse (53300) when the address or the user name has no
        failure left in its allowance."""
        with self._lock:
            now = self.clock()
            exhausted = self.addresses.level(address, now) < 1 or self.users.level(user, now) < 1
            if exhausted:
                self.refused += 1
        if exhausted:
            raise AuthFailed(user, TOO_MANY_FAILURES, f'too many failed login attempts for user "{user}" or from this address; '
                             "try again later")

    def failed(self, user: str, address: str) -> None:
        with self._lock:
            now = self.clock()
            self.addresses.add(address, now, -1.0)
            self.users.add(user, now, -1.0)


def peer_address(peername: Any) -> str:
    """The client's IP address from a socket's peername ('' for a Unix socket)."""
    if isinstance(peername, (tuple, list)) and peername:
        return str(peername[0])
    return ""


def scram_verifier(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """A SCRAM-SHA-256 verifier for `password`, usable as a user table secret."""
    salt, stored_key, server_key, i = _MECH.make_auth_info(password, iteration_count=iterations)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${i}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _parse_verifier(secret: str) -> ScramInfo | None:
    try:
        mech, params, keys = secret.split("$")
        iterations, salt = params.split(":")
        stored_key, server_key = keys.split(":")
        if mech != "SCRAM-SHA-256":
            return None
        d = base64.b64decode
        return d(salt), d(stored_key), d(server_key), int(iterations)
    except ValueError:
        return None


class UserTable:
    def __init__(self, users: dict[str, str] | None):
        self._secrets = dict(users or {})
        self._scram: dict[str, ScramInfo] = {}
        self._mock_key = os.urandom(16)

    def __contains__(self, user: str) -> bool:
        return user in self._secrets

    def scram_info(self, user: str) -> ScramInfo:
        """Salt and keys for a SCRAM exchange (computed once per user: PBKDF2 is slow by design)."""
        if user not in self._scram:
            secret = self._secrets.get(user)
            if secret is None or _md5_hash(secret):
                # Unknown user or only an md5 hash: a mock exchange that cannot succeed, with a
                # salt stable per name so repeated attempts look like those for a real user.
                salt = hmac.digest(self._mock_key, user.encode(), "sha256")[:16]
                return salt, os.urandom(32), os.urandom(32), SCRAM_ITERATIONS
            info = _parse_verifier(secret)
            if info is None:
                salt, stored_key, server_key, i = _MECH.make_auth_info(secret, iteration_count=SCRAM_ITERATIONS)
                info = (salt, stored_key, server_key, i)
            self._scram[user] = info
        return self._scram[user]

    def check_password(self, user: str, password: str) -> bool:
        """Verify a password sent in clear against whatever form the secret is stored in."""
        secret = self._secrets.get(user)
        if secret is None:
            return False
        if _md5_hash(secret):
            return hmac.compare_digest(secret, "md5" + _md5_hex(password + user))
        info = _parse_verifier(secret)
        if info is not None:
            salt, stored_key, server_key, i = info
            _, mine_stored, mine_server, _ = _MECH.make_auth_info(password, iteration_count=i, salt=salt)
            return hmac.compare_digest(mine_stored, stored_key) and hmac.compare_digest(mine_server, server_key)
        return hmac.compare_digest(secret.encode(), password.encode())

    def md5_inner(self, user: str) -> str | None:
        """md5(password + user) hex, when the secret allows md5 authentication."""
        secret = self._secrets.get(user)
        if secret is None or _parse_verifier(secret) is not None:
            return None
        return secret[3:] if _md5_hash(secret) else _md5_hex(secret + user)

    def is_scram_verifier(self, user: str) -> bool:
        secret = self._secrets.get(user)
        return secret is not None and _parse_verifier(secret) is not None


def _md5_hex(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _md5_hash(secret: str) -> bool:
    return len(secret) == 35 and secret.startswith("md5") and all(c in "0123456789abcdef" for c in secret[3:])


async def _password_message(receive: Receive) -> bytes:
    kind, body = await receive()
    if kind != b"p":
        raise p.ProtocolViolation(f"expected password response, got message type {kind!r}")
    return body


async def authenticate(method: str, users: UserTable | None, user: str, send: Send, receive: Receive,
                       throttle: LoginThrottle | None = None, peer: Any = None) -> None:
    """Run the exchange for `method`; raise AuthFailed (FATAL) unless the user proved who they are.

    `send` writes and flushes a message; `receive` returns the next (type, body). With a
    `throttle`, failures count against the client's address (`peer`: the socket's peername)
    and the user name, and attempts over the allowance are refused or delayed (53300).
    """
    if method == "trust":
        if users is not None and user not in users:
            raise AuthFailed(user, "28000", f'role "{user}" does not exist')
        return
    assert users is not None
    if throttle is None:
        await _exchange(method, users, user, send, receive)
        return
    address = peer_address(peer)
    throttle.check_address(address)
    wait = throttle.user_delay(user)
    if wait > 0:
        await asyncio.sleep(wait)
    try:
        await _exchange(method, users, user, send, receive, lambda: throttle.gate(user, address))
    except AuthFailed as e:
        if e.sqlstate != TOO_MANY_FAILURES:
            throttle.failed(user, address)  # runs right after the verification: no await in between
        raise


async def _exchange(method: str, users: UserTable, user: str, send: Send, receive: Receive,
                    gate: Callable[[], None] = lambda: None) -> None:
    """The password exchange; `gate()` is called right before the password is verified."""
    if method == "scram-sha-256" or (method == "md5" and users.is_scram_verifier(user)):
        await _scram(users, user, send, receive, gate)
    elif method == "md5":
        salt = os.urandom(4)
        await send(p.authentication(AUTH_MD5, salt))
        answer = p.Reader(await _password_message(receive)).cstring()
        gate()
        inner = users.md5_inner(user)
        expected = "md5" + hashlib.md5(inner.encode() + salt).hexdigest() if inner else None
        if expected is None or not hmac.compare_digest(answer.encode(), expected.encode()):
            raise AuthFailed(user)
    elif method == "password":
        await send(p.authentication(AUTH_CLEARTEXT))
        answer = p.Reader(await _password_message(receive)).cstring()
        gate()
        if not users.check_password(user, answer):
            raise AuthFailed(user)
    else:
        raise ValueError(f"unknown auth method {method!r}; one of {AUTH_METHODS}")


def _set_client_first(server, client_first: str) -> None:
    """Feed client-first-message to scramp, tolerating libpq's empty user name.

    libpq sends "n,,n=,r=<nonce>" (the startup packet already named the user) and scramp
    rejects empty attributes. scramp gets a placeholder name, then the original message text,
    which is part of the AuthMessage both sides sign, is put back.
    """
    header_end = client_first.find(",", client_first.find(",") + 1) + 1
    bare = client_first[header_end:]
    if not bare.startswith("n=,"):
        server.set_client_first(client_first)
        return
    server.set_client_first(client_first[:header_end] + "n=*," + bare[3:])
    server.client_first_bare = bare


async def _scram(users: UserTable, user: str, send: Send, receive: Receive, gate: Callable[[], None]) -> None:
    info = users.scram_info(user)
    # The SCRAM user name is ignored (libpq sends none): the startup packet names the user.
    server = _MECH.make_server(lambda _name: info)
    await send(p.authentication(AUTH_SASL, b"SCRAM-SHA-256\0\0"))
    r = p.Reader(await _password_message(receive))
    mechanism = r.cstring()
    length = r.int32()
    first = r.bytes(length) if length >= 0 else b""
    if mechanism != "SCRAM-SHA-256":
        raise p.ProtocolViolation("client selected an invalid SASL authentication mechanism")
    try:
        _set_client_first(server, first.decode())
        await send(p.authentication(AUTH_SASL_CONTINUE, server.get_server_first().encode()))
        final_message = (await _password_message(receive)).decode()
        gate()
        server.set_client_final(final_message)
        final = server.get_server_final()
    except (ScramException, UnicodeDecodeError):
        raise AuthFailed(user) from None
    await send(p.authentication(AUTH_SASL_FINAL, final.encode()))
