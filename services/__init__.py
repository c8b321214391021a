"""Rekisteri services: one package each, all with the same shape (see docs and STYLE.md)."""
