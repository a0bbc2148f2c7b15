"""pncd: distil a medical segmentation network into a small student, export it, measure it."""

__version__ = "0.1.0"
