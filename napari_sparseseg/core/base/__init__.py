"""Shared vocabulary of every room: typed errors, the settings dataclasses, progress, grid checks, the device."""
