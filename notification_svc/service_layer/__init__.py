"""The notification service use cases: send once per key, list, stream."""
