"""The decision service: BentoML ``rank`` / ``reward`` / ``activate``, candidate generation, the
decision log, and the online learner with its snapshots (see README, "Serving")."""
