"""Notifications, the send command, the dedupe window and the history: plain Python."""
