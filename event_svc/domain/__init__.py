"""Events, reservations and the seat moves of each reservation transition, as plain Python."""
