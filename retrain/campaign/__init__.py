"""Campaigns: grid expansion, run naming, the plan, orchestration and resume."""
