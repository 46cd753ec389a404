"""The servers under test, one small script each, all with the behaviour of ``common.py``."""
