"""pncd: distil a medical segmentation network into a small student, export it, measure it."""

__version__ = "0.1.0"

from pncd import telemetry as _telemetry

_telemetry.opt_out()  # before OpenVINO or NNCF can be imported: see pncd.telemetry
