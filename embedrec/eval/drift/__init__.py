"""Monitoring: drift between two generations of a space (`embedrec drift`; live in serve)."""
