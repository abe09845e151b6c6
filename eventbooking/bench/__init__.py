"""`bookingctl bench`: throughput, latency and the cost of each booking, saga against direct.

`command` is the click command; `run` drives the scenarios; `client` is the
grpc.aio client that makes the bookings (and, in direct mode, the saga's
participant calls); `target` starts the embedded system or describes an
external one; `procfs`, `stats` and `report` are the pure parts: CPU and
memory from /proc, percentiles, and the JSON report.
"""
