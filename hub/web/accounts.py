"""Accounts of the web app: users with roles, organisations, API tokens.

Roles: ``admin`` manages organisations and users; ``ets`` (an operator of one
Third Sector entity) enters data and sees only their organisation's entries;
``analyst`` (bound to a consortium, or to the whole district when ``org`` is
empty) sees aggregates. Passwords are hashed with argon2id (memory-hard).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from hub.errors import RaccordoError
from hub.registry import tables as t
from hub.web.limits import normalise_username

ROLES = ("admin", "ets", "analyst")
MIN_PASSWORD = 10

_hasher = PasswordHasher()  # argon2id, library defaults (64 MiB, 3 iterations)
#: Verified against when the user does not exist, so timing does not tell who exists.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    org: str | None
    #: A fingerprint of the password hash: a session remembers it, so a new
    #: password ends every session opened with the old one.
    credential: str = field(default="", compare=False, repr=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class AccountError(RaccordoError):
    exit_code = 2


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def credential_of(password_hash: str) -> str:
    return hashlib.sha256(password_hash.encode()).hexdigest()[:32]


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must be at least {MIN_PASSWORD} characters long")


def create_user(
    engine: sa.Engine, username: str, password: str, role: str, org: str | None
) -> User:
    username = normalise_username(username)
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    if not username or len(username) > 80:
        raise AccountError("the user name must be 1 to 80 characters")
    if role == "ets" and not org:
        raise AccountError("an ETS operator must belong to an organisation")
    if role == "admin" and org:
        raise AccountError("an admin belongs to no organisation")
    check_password_strength(password)
    with engine.begin() as conn:
        if org:
            found = conn.execute(
                sa.select(t.organisations.c.kind).where(t.organisations.c.code == org)
            ).first()
            if found is None:
                raise AccountError(f"no organisation {org!r}: create it first")
            if role == "ets" and found.kind != "ets":
                raise AccountError(f"{org!r} is not a Third Sector organisation (kind ets)")
        if conn.execute(
            sa.select(t.web_users.c.id).where(t.web_users.c.username == username)
        ).first():
            raise AccountError(f"the user {username!r} already exists")
        res = conn.execute(
            t.web_users.insert().values(
                username=username,
                password_hash=_hasher.hash(password),
                role=role,
                org=org,
                active=True,
                created_at=_now(),
            )
        )
        pk = res.inserted_primary_key
        assert pk is not None
    return User(int(pk[0]), username, role, org)


def set_password(engine: sa.Engine, username: str, password: str) -> None:
    check_password_strength(password)
    with engine.begin() as conn:
        n = conn.execute(
            t.web_users.update()
            .where(t.web_users.c.username == normalise_username(username))
            .values(password_hash=_hasher.hash(password))
        ).rowcount
    if not n:
        raise AccountError(f"no user {username!r}")


def set_active(engine: sa.Engine, user_id: int, active: bool) -> None:
    with engine.begin() as conn:
        conn.execute(t.web_users.update().where(t.web_users.c.id == user_id).values(active=active))


def set_password_of(engine: sa.Engine, user_id: int, password: str) -> None:
    check_password_strength(password)
    with engine.begin() as conn:
        conn.execute(
            t.web_users.update()
            .where(t.web_users.c.id == user_id)
            .values(password_hash=_hasher.hash(password))
        )


def update_user(engine: sa.Engine, user_id: int, role: str, org: str | None) -> None:
    """Change a user's role and organisation (same rules as at creation)."""
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r} (roles: {', '.join(ROLES)})")
    if role == "ets" and not org:
        raise AccountError("an ETS operator must belong to an organisation")
    if role == "admin" and org:
        raise AccountError("an admin belongs to no organisation")
    with engine.begin() as conn:
        if org:
            found = conn.execute(
                sa.select(t.organisations.c.kind).where(t.organisations.c.code == org)
            ).first()
            if found is None:
                raise AccountError(f"no organisation {org!r}: create it first")
            if role == "ets" and found.kind != "ets":
                raise AccountError(f"{org!r} is not a Third Sector organisation (kind ets)")
        conn.execute(
            t.web_users.update().where(t.web_users.c.id == user_id).values(role=role, org=org)
        )


def update_organisation(engine: sa.Engine, code: str, name: str) -> bool:
    if not name.strip() or len(name) > 200:
        raise AccountError("the name must be 1 to 200 characters")
    with engine.begin() as conn:
        n = conn.execute(
            t.organisations.update().where(t.organisations.c.code == code).values(name=name.strip())
        ).rowcount
    return bool(n)


def authenticate(engine: sa.Engine, username: str, password: str) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.web_users).where(t.web_users.c.username == normalise_username(username))
        ).first()
    if row is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_DUMMY_HASH, password)
        return None
    try:
        _hasher.verify(row.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if not row.active:
        return None
    password_hash = row.password_hash
    if _hasher.check_needs_rehash(password_hash):
        password_hash = _hasher.hash(password)
        with engine.begin() as conn:
            conn.execute(
                t.web_users.update()
                .where(t.web_users.c.id == row.id)
                .values(password_hash=password_hash)
            )
    return User(row.id, row.username, row.role, row.org, credential_of(password_hash))


def get_user(engine: sa.Engine, user_id: int) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.web_users).where(t.web_users.c.id == user_id, t.web_users.c.active)
        ).first()
    if row is None:
        return None
    return User(row.id, row.username, row.role, row.org, credential_of(row.password_hash))


def session_user(engine: sa.Engine, user_id: int, credential: str) -> User | None:
    """The user of a session, if still active and with the password the session began with."""
    user = get_user(engine, user_id)
    if user is None or not hmac.compare_digest(user.credential, credential):
        return None
    return user


def list_users(engine: sa.Engine) -> list[dict[str, object]]:
    u = t.web_users
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(u.c.id, u.c.username, u.c.role, u.c.org, u.c.active).order_by(u.c.username)
        ).all()
    return [r._asdict() for r in rows]


def list_organisations(engine: sa.Engine, kind: str | None = None) -> list[dict[str, object]]:
    o = t.organisations
    q = sa.select(o.c.code, o.c.name, o.c.kind).order_by(o.c.kind, o.c.name)
    if kind:
        q = q.where(o.c.kind == kind)
    with engine.connect() as conn:
        return [r._asdict() for r in conn.execute(q).all()]


def create_organisation(
    engine: sa.Engine, code: str, name: str, kind: str, district: str | None
) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", code):
        raise AccountError("the code may hold letters, digits and . _ - (at most 40)")
    if not name.strip() or len(name) > 200:
        raise AccountError("the name must be 1 to 200 characters")
    if kind not in ("ets", "ente_gestore"):
        raise AccountError("kind must be ets or ente_gestore")
    with engine.begin() as conn:
        if conn.execute(
            sa.select(t.organisations.c.code).where(t.organisations.c.code == code)
        ).first():
            raise AccountError(f"the organisation {code!r} already exists")
        conn.execute(
            t.organisations.insert().values(
                code=code, name=name.strip(), kind=kind, district=district
            )
        )


# -- API tokens -------------------------------------------------------------------
def token_hash(token: str) -> str:
    # A random 256-bit secret, not a personal identifier: a plain SHA-256 is enough.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: sa.Engine, org: str, label: str) -> str:
    """Create an API token for ``org``; the clear token is returned once and never stored."""
    token = "rac_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            t.api_tokens.insert().values(
                org=org,
                token_hash=token_hash(token),
                label=label.strip()[:80] or "token",
                revoked=False,
                created_at=_now(),
            )
        )
    return token


def token_org(engine: sa.Engine, token: str) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.api_tokens.c.org).where(
                t.api_tokens.c.token_hash == token_hash(token),
                t.api_tokens.c.revoked.is_(False),
            )
        ).first()
    return None if row is None else str(row.org)


def list_tokens(engine: sa.Engine, org: str) -> list[dict[str, object]]:
    a = t.api_tokens
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(a.c.id, a.c.label, a.c.created_at, a.c.revoked)
            .where(a.c.org == org)
            .order_by(a.c.id)
        ).all()
    return [r._asdict() for r in rows]


def revoke_token(engine: sa.Engine, org: str, token_id: int) -> bool:
    with engine.begin() as conn:
        n = conn.execute(
            t.api_tokens.update()
            .where(t.api_tokens.c.id == token_id, t.api_tokens.c.org == org)
            .values(revoked=True)
        ).rowcount
    return bool(n)
