"""Proxima's contracts: events, bus names, model bundles and the feature contract.

Nothing here imports from ``edge_node``, ``central`` or ``model_export``, and nothing
here does I/O beyond what a codec needs: callers read files and sockets, this package
turns bytes into checked values and back.
"""
