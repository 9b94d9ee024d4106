"""Project-wide pytest settings.  The harness plugin itself is loaded through its
`pytest11` entry point (pip install -e .), so it works the same in a user's project."""

from hypothesis import HealthCheck, settings

# Inference on a shared 2-core CI machine has no useful per-example deadline.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")
