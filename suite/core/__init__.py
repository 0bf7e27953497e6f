"""Foundations every layer uses: errors, the registry, atomic writes, devices and timers, metrics, seeding."""
