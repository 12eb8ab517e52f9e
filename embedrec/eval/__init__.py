"""Evaluation, in three rooms that do not import each other: bench/, models/ and drift/."""
