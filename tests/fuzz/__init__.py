"""Fuzzing of every decoder a peer can reach.

What a peer sends goes through six decoders; each is fed valid input (it must come back equal
after a round trip) and arbitrary or mutated input (the only outcome allowed is that protocol's
error for that session: an :class:`~hub.errors.EngineIOError`, a
:class:`~hub.errors.SocketIOError`, an HTTP 4xx, a WebSocket close, a 400/422 of the emit
endpoint; never another exception, never a hang, never an answer that grows without bound):

==============================  ==========================================================
``engineio-packet``             :func:`hub.engineio.decode_packet` (one WebSocket message)
``engineio-payload``            :class:`hub.engineio.PayloadDecoder` fed in random chunkings
``engineio-session``            :class:`hub.engineio.Session` fed arbitrary call sequences
``socketio-packet``             :class:`hub.protocol.Decoder`, attachments included
``http``                        heads and bodies through the native listener (h11)
``http-session-body``           polling bodies of a live session, behind h11 and the engine
``websocket``                   frames after a valid upgrade, to the Engine.IO echo endpoint
``socketio-wire``               Socket.IO packets in frames, to a Socket.IO server
``emit-endpoint``               ``POST /internal/...`` JSON of a running hub
==============================  ==========================================================

The modules: :mod:`fuzz.mutate` (seeded generators of valid input and a mutator),
:mod:`fuzz.targets` (feed one input to a sans-I/O decoder and check the outcome),
:mod:`fuzz.live` (the same for the decoders behind a listener on 127.0.0.1), and
``python -m fuzz`` (the long run, ``make fuzz``).

The short runs in the test suite use :func:`examples`; ``HUB_FUZZ_PROFILE=long`` selects the
long profile, which multiplies every test's examples by :data:`LONG_FACTOR`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["LONG_FACTOR", "PROFILE", "examples"]

LONG_FACTOR = 50
"""How many times more examples each property test runs under ``HUB_FUZZ_PROFILE=long``."""

# Slow examples are the point of a live server; a fixture around a fuzz test checks the server
# once after all the test's examples.
_SUPPRESSED = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.function_scoped_fixture,
]

settings.register_profile(
    "hub-fuzz-short",
    deadline=None,
    suppress_health_check=_SUPPRESSED,
)
settings.register_profile(
    "hub-fuzz-long",
    deadline=None,
    suppress_health_check=_SUPPRESSED,
    print_blob=True,
)

PROFILE = "hub-fuzz-long" if os.environ.get("HUB_FUZZ_PROFILE") == "long" else "hub-fuzz-short"
"""The hypothesis profile of the fuzz tests, chosen by ``HUB_FUZZ_PROFILE`` (``short`` or
``long``)."""


def examples(short: int) -> settings:
    """The settings of one fuzz test: ``short`` examples in the suite, more in the long run.

    Args:
        short: the examples the test runs in the normal suite (sized so that every fuzz test
            together stays within about 20 s on two cores).
    """
    factor = LONG_FACTOR if PROFILE == "hub-fuzz-long" else 1
    return settings(settings.get_profile(PROFILE), max_examples=short * factor)
