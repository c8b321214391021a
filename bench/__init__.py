"""Benchmarks: each prints its figures beside a raw-client baseline measured in the same run."""
