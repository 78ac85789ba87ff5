"""tinyc's version: one home, read by the front-end, the CLI, the driver, the codec and packaging."""

__version__ = "0.1.0"
