"""Benchmarks of agentfile (see benchmarks/README.md); not part of the installed package."""
