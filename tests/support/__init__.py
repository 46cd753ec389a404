"""Helpers shared by the engine and Socket.IO tests: wire-level clients, no mocks."""
