"""Sluice: a FastAPI service that stays fast and loses nothing under overload."""
