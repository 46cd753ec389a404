"""The soak run (``make soak``; ``python -m soak`` from ``tests/``; RELIABILITY.md, "Soak").

Thousands of stock socket.io-client tabs on two hub nodes that share a real Redis, with churn,
emits through both nodes' ``/internal/emit``, and Redis killed and started again in the middle;
what every tab should have received is counted against what it did. :mod:`soak.run` makes the
run, :mod:`soak.analysis` counts (and defines what is lost), :mod:`soak.plot` draws it.
"""
