"""Benchmarking: the self-contained runner that ships to a device, and the transports that run it."""
