"""Capacity planning (`peakroute plan`): the queueing maths (``erlang``, pure), the plan of a
night from a forecast (``planner``, pure), and the command with its inputs and outputs
(``cli``: forecast CSV, the router's history in Redis, table, JSON, plot)."""
