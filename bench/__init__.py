"""Benchmarks of the service as deployed (gunicorn, several workers) against the embedded database."""
