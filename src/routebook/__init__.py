"""routebook: a semantic LLM router that shows its evidence.

The supported Python surface is `routebook.client`; every other module is internal to the
service. Importing this package loads nothing heavy.
"""

__version__ = "0.1.0"
