"""Pure decisions: no I/O, no clock reads, no logging.

Imports only ``controller.api`` and the standard library (an import-linter contract).
"""
