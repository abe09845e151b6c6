"""The shared package: generated contracts and the runtime every service uses.

It knows no domain: server bootstrap, settings, database engine, errors,
retry policies, logging, the embedded PostgreSQL and the client-side tools.
"""
