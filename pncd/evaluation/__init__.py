"""Evaluating a trained run on a split: predictions, per-case metrics, overlays (:mod:`pncd.evaluation.run`)."""
