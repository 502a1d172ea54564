"""`arena plan`: per-device memory and time of every run of a sweep, before it starts."""
