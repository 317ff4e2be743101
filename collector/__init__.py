"""The wiring: which processes run, what they start, and how records travel between the layers.
run.py parses the command line and calls one pipeline here; nothing but this package (and run.py)
imports web."""
