"""hub's benchmark suite: ``python -m bench fanout|connect|polling`` (see ``README.md``)."""
