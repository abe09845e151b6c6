"""The notification service: delivers notifications through configured sinks, once per key."""
