"""The booking saga as plain Python: states, definitions, the log and the planner."""
