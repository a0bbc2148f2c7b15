"""Training: the run life cycle (:mod:`pncd.training.run`) and the loop (:mod:`pncd.training.loop`)."""
