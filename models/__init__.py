"""oO's ML package: policies, featurization, off-policy evaluation, simulation, training and the
MLflow registry. Policies do no I/O; only ``models.registry`` talks to MLflow."""
