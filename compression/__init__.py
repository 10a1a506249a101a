"""Shrink-and-Fine-Tune compression of seq2seq summarizers (T5 and BART families).

The engine behind the dashboard and the CLI; it imports no UI library. The flow:
config -> load -> select/shrink -> train -> evaluate -> quantize -> export, each stage a function
taking and returning plain values (see :mod:`compression.pipeline`).
"""

__version__ = "0.1.0"
