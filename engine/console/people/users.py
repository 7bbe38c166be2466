"""Who may log in, with which role, and how much of the machine each may take.

A users file (YAML, written by `python app.py add-user`) holds salted scrypt hashes, never
passwords, plus per-user quotas over defaults:

    defaults:                # quotas for every user who does not set their own
      max_queued_jobs: 20
      max_running_jobs: 4
    users:
      alice:
        role: admin
        password: scrypt$16384$8$1$<salt>$<hash>
      bob:
        role: user
        password: scrypt$...
        quotas: {max_gpus: 1}
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from engine.atomic import write_atomic
from engine.config import ConfigError
from engine.schema import validated

Role = Literal["admin", "user"]
ROLES = get_args(Role)
ADMIN, USER = ROLES
LOCAL = "local"  # the owner of every job when the console runs without logins

# name -> (what it limits, built-in default; None = unlimited)
QUOTAS: dict[str, tuple[str, int | None]] = {
    "max_jobs": ("jobs kept at once, whatever their status (delete old ones to make room)", 200),
    "max_queued_jobs": ("jobs waiting in the queue at once", 20),
    "max_running_jobs": ("jobs running at once", 4),
    "max_gpus": ("GPUs in use at once", 8),
    "max_steps": ("max_steps of one job", None),
    "max_epochs": ("num_train_epochs of one job", None),
    "max_upload_mb": ("MiB of uploaded datasets stored at once", 2048),
}
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
log = logging.getLogger("traindeck.users")


class NotYourJob(PermissionError):
    """A user acted on a job that belongs to someone else."""


class QuotaExceeded(ConfigError):
    pass


@dataclass(frozen=True)
class User:
    name: str
    role: str = USER
    quotas: dict[str, int | None] = field(default_factory=dict)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


# Without logins everyone at the console is the machine's owner: every job is theirs, no quotas.
LOCAL_USER = User(LOCAL, ADMIN, {name: None for name in QUOTAS})
PLAIN_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def user_folder_name(user: str) -> str:
    """A folder name for a user: the name itself when it is plain, else a hash of it (so two
    names that differ only in odd characters never share a folder)."""
    if PLAIN_USER.match(user):
        return user
    return "u-" + hashlib.sha256(user.encode()).hexdigest()[:16]


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    encode = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt)}${encode(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


Quota = Annotated[int, Field(ge=0)] | None
# The quotas a users file may set (every one optional: those left out come from the defaults).
Quotas = create_model(
    "Quotas", __config__=ConfigDict(extra="forbid", strict=True, title="quota"),
    **{name: (Quota, Field(None, description="a whole number >= 0 or null (unlimited)"))
       for name in QUOTAS})


def quotas_set(quotas: BaseModel | None) -> dict[str, int | None]:
    """The quotas a file or command line sets, without those it leaves to the defaults."""
    return quotas.model_dump(exclude_unset=True) if quotas is not None else {}


class UserEntry(BaseModel):
    """One login of a users file."""

    model_config = ConfigDict(extra="forbid", strict=True)

    role: Role = USER
    password: str = Field(description="a scrypt hash (use `python app.py add-user`)")
    quotas: Quotas | None = None

    @field_validator("password")
    @classmethod
    def _is_a_hash(cls, password: str) -> str:
        if not password.startswith("scrypt$"):
            raise ValueError("not a scrypt hash; passwords are never stored in plain text "
                             "(use `python app.py add-user`)")
        return password


class UsersFile(BaseModel):
    """A users file: logins by name, and the quotas of those who do not set their own."""

    model_config = ConfigDict(extra="forbid", strict=True)

    defaults: Quotas | None = None
    users: dict[str, UserEntry] | None = None


class Users:
    """The logins the console accepts; empty means no login (everyone is `local`, an admin)."""

    def __init__(self, users: dict[str, tuple[User, str]] | None = None,
                 defaults: dict[str, int | None] | None = None):
        self._users = users or {}  # name -> (user, password hash)
        self.defaults = {name: default for name, (_, default) in QUOTAS.items()} | (defaults or {})

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Users:
        mode = stat.S_IMODE(os.stat(path).st_mode) if os.path.exists(path) else 0
        if mode & 0o077:
            log.warning("%s is readable by other accounts on this machine (mode %o): its password "
                        "hashes can be copied and guessed offline; chmod 600 %s", path, mode, path)
        data = validated(UsersFile, _read(Path(path)), str(path))
        users = {name: (User(name, entry.role, quotas_set(entry.quotas)), entry.password)
                 for name, entry in (data.users or {}).items()}
        defaults = quotas_set(data.defaults)
        return cls(users, defaults)

    def add_logins(self, logins: list[tuple[str, str, str]]) -> None:
        """Logins given on the command line (name, password, role); hashed in memory only."""
        for name, password, role in logins:
            self._users[name] = (User(name, role), hash_password(password))

    def authenticate(self, name: str, password: str) -> bool:
        """Takes as long for an unknown name as for a known one: timing tells no names."""
        entry = self._users.get(name)
        matches = verify_password(password, entry[1] if entry else _UNKNOWN_USER_HASH)
        return entry is not None and matches

    def get(self, name: str | None) -> User:
        if not self.enabled:
            return LOCAL_USER
        entry = self._users.get(name or "")
        if entry is None:
            raise NotYourJob(f"unknown user {name!r}")
        user = entry[0]
        return User(user.name, user.role, self.defaults | user.quotas)

    def quotas_of(self, name: str) -> dict[str, int | None]:
        """Quotas of a job's owner (jobs from before logins were enabled get the defaults)."""
        if not self.enabled:
            return LOCAL_USER.quotas
        entry = self._users.get(name)
        return self.defaults | (entry[0].quotas if entry else {})


# Checked against for unknown names, so that refusing one costs a real scrypt run too.
_UNKNOWN_USER_HASH = hash_password(secrets.token_hex(16))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with `users:` (and optional `defaults:`)")
    return data


def add_user(path: str | os.PathLike, name: str, password: str, role: str = USER,
             quotas: dict[str, int | None] | None = None) -> None:
    """Add or update one user in a users file, keeping everyone else."""
    path = Path(path)
    if not name or ":" in name or name != name.strip():
        raise ConfigError(f"user name {name!r}: must be non-empty, without ':' or surrounding "
                          "spaces")
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    if len(password) < 8:
        raise ConfigError("password: at least 8 characters")
    data = _read(path)
    Users.from_file(path)  # refuse to rewrite a file that is already broken
    users = data.setdefault("users", {}) or {}
    data["users"] = users
    entry = dict(users.get(name) or {})
    entry.update(role=role, password=hash_password(password))
    if quotas:
        checked = quotas_set(validated(Quotas, quotas, "quotas"))
        entry["quotas"] = {**(entry.get("quotas") or {}), **checked}
    users[name] = entry
    data.setdefault("defaults", {name_: default for name_, (_, default) in QUOTAS.items()})
    # Created private: hashes are worth keeping from other accounts, not even for a moment.
    write_atomic(path, yaml.safe_dump(data, sort_keys=False), mode=0o600)
