"""Features: tables over the lake, the pipeline that validates and publishes them, online reads, training sets, skew."""
