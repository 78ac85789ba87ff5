"""The IR: types, graph, op registry with shape inference, printer, codec and verifier.

`tinyc.ir` imports nothing else of tinyc.
"""
