"""The ground floor's other half: how NetTally's processes start and talk (runtime.children) and
how they say what went wrong (runtime.text). Imports nothing of the project."""
