"""graphgt: a graph-transformer research framework (GraphGPS-style models, from molecules to papers100M)."""

__version__ = "0.1.0"
