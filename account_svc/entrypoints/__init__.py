"""The gRPC servicer."""
