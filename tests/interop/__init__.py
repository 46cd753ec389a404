"""Interop tests: hub driven by real Socket.IO clients that nobody here wrote.

``node_client.mjs`` drives the official ``socket.io-client@4``; ``py_client.py`` drives
python-socketio's ``AsyncClient``. Both run in their own process and speak the same line
protocol, read by :mod:`interop.harness`; :mod:`interop.servers` holds the servers that both
suites drive.
"""
