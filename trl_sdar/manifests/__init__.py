"""Pinned evaluation task lists (JSON), shipped with the package."""
