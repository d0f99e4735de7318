"""shopaug.simulate: simulated users driving a live service, and the closed loop around it.

* :mod:`shopaug.simulate.users`: the position-biased click model and the HTTP client that
  plays it against ``GET /search`` and ``POST /feedback``.
* :mod:`shopaug.simulate.loop`: ``shopaug simulate``: the real service in a background
  thread, rounds of simulated feedback, an online round after each.

This package sits above both :mod:`shopaug.serve` and :mod:`shopaug.online`, the only place
that starts the one and runs the other.
"""
