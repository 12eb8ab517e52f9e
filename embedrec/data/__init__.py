"""Packaged datasets (one registry), the one table reader, a config's [data] tables."""
