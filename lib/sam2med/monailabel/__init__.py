"""MONAI Label integration: infer tasks, request parsing, strategies, datastore guard and server app.

The only package of sam2med that imports `monailabel`. The parsing, safety and engine modules
(`params`, `safety`, `shared_propagator`, `results`, `appconfig`) do not import it, so they load fast and are
unit-tested without a server; `tasks`, `strategies`, `datastore`, `http` and `server` do.
"""
