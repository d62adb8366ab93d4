"""``pycgn synth`` (its options live beside the synthesis code for now)."""
from ..synth import register_cli as register  # noqa: F401
