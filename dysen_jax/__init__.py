"""dysen_jax: Dysen-VDM and VidRD in JAX/Flax.

Importing the package is cheap: it never imports tensorflow or torch (those are loaded lazily
by the data pipeline and the converters).
"""

__version__ = "0.1.0"
