"""hub: a Socket.IO server for Python on Trio."""
