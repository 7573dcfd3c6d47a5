"""Upgrade checks: before and after an upgrade, relocated-install drift, and undoable fixes."""
