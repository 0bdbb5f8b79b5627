"""Indicators computed from the registry (district planning questions).

* :mod:`.table` — the result shape (:class:`~hub.observatory.table.Table`, ``Period``);
* :mod:`.indicators` — interventions, Third Sector needs and services, overlaps, coverage,
  prese in carico as tables; ``release_tables`` lists what is published;
* :mod:`.prese_in_carico` — the prese-in-carico definitions;
* :mod:`.disclosure` — suppression before anything leaves the analyst role;
* :mod:`.opendata` — ``raccordo export opendata``;
* :mod:`.aggregates` — ``refresh(engine)``: pre-computed tables, after each sync.
"""
