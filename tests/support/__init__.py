"""Test support: where the real infrastructure is, and small helpers shared by the suites."""
