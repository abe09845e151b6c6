"""The gRPC servicer of NotificationService."""
