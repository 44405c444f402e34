"""Benchmark of django_remote_submission against raw OpenSSH: ``make bench``.

See bench/README.md. ``python -m bench --help`` lists the options.
"""
