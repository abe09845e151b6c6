"""The unit of work; later the saga engine and recovery."""
