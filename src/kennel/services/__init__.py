"""Use cases: the only layer that decides. No HTTP, no SQL."""
