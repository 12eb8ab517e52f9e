"""Held-out recall against exact search; calibration of search effort to a target recall."""
