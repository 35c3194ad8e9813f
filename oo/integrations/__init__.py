"""Integrations with outside services, each in its own package."""
