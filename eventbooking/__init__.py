"""The shared package: generated contracts and the runtime every service uses.

It knows no domain: server bootstrap, settings, database engine, errors,
retry policies, logging, the embedded PostgreSQL and the client-side tools.
"""

import os as _os

# Our tools and tests start subprocesses (PostgreSQL, the services) while gRPC runs.
# With gRPC's fork support on, its post-fork handler restarts a poller in the child
# between fork and exec, which can die there on a closed epoll fd and fail the
# subprocess (grpc/grpc#43055). Nothing here uses gRPC across a fork, so turn it off
# before gRPC starts; an explicit setting in the environment still wins.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
