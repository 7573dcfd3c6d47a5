"""Diagnosis: join a verdict with the host inventory and the known-issue signatures into a cause."""
