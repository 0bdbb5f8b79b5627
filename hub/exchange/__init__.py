"""Exchange between districts under convenzioni (BLUEPRINT §12).

- :mod:`hub.exchange.convenzioni`: the agreement as a signed TOML file, and the
  check "may this package flow under it?".
- :mod:`hub.exchange.package`: the package (manifest + payload), signed by the
  sender, encrypted for the recipient (HPKE), with ModI-shaped headers; receipts.
- :mod:`hub.exchange.log`: the append-only Merkle-tree log of every flow.
- :mod:`hub.exchange.server` / :mod:`hub.exchange.client`: HTTP between hubs.
- :mod:`hub.exchange.load` and :mod:`hub.exchange.convert`: the two seams to the
  engine's ``load`` stage and to the pseudonymisation service.
- :mod:`hub.exchange.push`: push mode, the same sealed and signed messages from a
  consortium's worker to its own district hub, which loads them through the pipeline.
"""
