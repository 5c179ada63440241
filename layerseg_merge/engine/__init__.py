"""The method without mergekit: settings with their one set of defaults, the schedule, which inputs merge into a
tensor (the plan), the arithmetic, the per-tensor driver, the in-memory merges and reading recipe text.

Imports neither mergekit nor click.
"""
