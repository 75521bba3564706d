"""infertide's stream half: the Faust app that routes events through the Serve models.

Imports ``schemas`` only; models are reached through Serve handles.
"""
