"""Deployment: native start/stop scripts, provisioning from the catalog, the container image."""
