"""What the routers share: configuration, database, pseudonymiser, comuni, stores."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import sqlalchemy as sa

from hub.config import Config
from hub.observatory.comuni import Comune, load_comuni
from hub.pipeline import open_keyring
from hub.pseudonyms import Pseudonymiser, open_pseudonymiser
from hub.registry import Registry
from hub.web import intake
from hub.web.limits import LoginLimiter, Network, parse_networks
from hub.web.store import StateStore


@dataclass
class WebState:
    config: Config
    engine: sa.Engine
    pseudonymiser: Pseudonymiser
    comuni: dict[str, Comune]
    store: StateStore
    limiter: LoginLimiter
    writer: intake.IntakeWriter
    trusted_proxies: list[Network] = field(default_factory=list)
    #: Organisation of each API token hash seen (see ``routers.api.api_sender``).
    token_orgs: dict[str, str] = field(default_factory=dict)
    #: Password hashing (argon2id, 64 MiB, CPU-bound) runs in threads, a few at a
    #: time, so a burst of logins cannot take every core from the other requests.
    hashing: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(2)
    )


def build_state(config: Config, registry: Registry | None = None) -> WebState:
    web = config.settings.web
    registry = registry or Registry.open(config.registry_url)
    store = StateStore(config.resolve(web.state_file))
    pseudonymiser = open_pseudonymiser(config, open_keyring(config))
    comuni = load_comuni(config.resolve(web.comuni_file) if web.comuni_file else None)
    return WebState(
        config=config,
        engine=registry.engine,
        pseudonymiser=pseudonymiser,
        comuni=comuni,
        store=store,
        limiter=LoginLimiter(store, web.login_attempts, web.login_window_minutes * 60),
        writer=intake.IntakeWriter(registry.engine, pseudonymiser=pseudonymiser, comuni=comuni),
        trusted_proxies=parse_networks(web.trusted_proxies),
    )
