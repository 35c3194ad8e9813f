"""The BentoML serving deployable: rank, reward, activate, candidate generation and the learner."""
