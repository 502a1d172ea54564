"""Sweeps as data: the typed sweep config (`spec`), its expansion into runs with stable ids and
stage settings (`expand`), and loading a YAML file with overrides (`load`). Running them is
`runners/`."""
