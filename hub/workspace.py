"""Create a workspace: ``raccordo.toml``, a mappings folder and a keyring.

The keyring and its key file go in ``keys/``, apart from the registry. In
production the key file belongs on the machine (or worker) that
pseudonymises, backed up offline; see docs/pseudonymisation.md.
"""

from __future__ import annotations

from pathlib import Path

from hub.errors import ConfigError
from hub.pseudonyms import Keyring, KeySource

CONFIG_TEMPLATE = """\
# Raccordo configuration. Every key is documented in docs/configuration.md.
# Relative paths are relative to this file.

[hub]
district = "{district}"
district_name = "{district_name}"
registry_url = "sqlite:///registry.sqlite"
keyring = "keys/keyring.json"
keyring_key_file = "keys/keyring.key"
mappings_dir = "mappings"
batch_size = 10000
commit_every = 200000
quarantine_retention_days = 365

# One table per organisation that supplies data.
# [organisations.CISSA]
# name = "Consorzio Intercomunale Servizi Sociali"
# kind = "ente_gestore"      # or "ets"

# One table per connector instance.
# [connectors.cissa_csv]
# type = "csv_export"        # see `raccordo connectors list`
# org = "CISSA"
# mapping = "my-export.toml" # in mappings/ (or a built-in mapping)
# schedule = "@daily"
# [connectors.cissa_csv.config]
# ...
{extra}"""


def init_workspace(directory: Path, *, district: str, district_name: str, extra: str = "") -> Path:
    directory = directory.resolve()
    cfg = directory / "raccordo.toml"
    if cfg.exists():
        raise ConfigError(
            "a raccordo.toml already exists here; refusing to overwrite it",
            where=str(cfg),
            hint="choose another directory, or edit the existing file",
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "mappings").mkdir(exist_ok=True)
    keys = directory / "keys"
    keys.mkdir(exist_ok=True, mode=0o700)
    keyring = keys / "keyring.json"
    if not keyring.exists():
        source = KeySource.generate_key_file(keys / "keyring.key")
        Keyring.create(keyring, source)
    cfg.write_text(
        CONFIG_TEMPLATE.format(district=district, district_name=district_name, extra=extra),
        encoding="utf-8",
    )
    return cfg
