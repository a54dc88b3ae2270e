"""Fleet vetting: many Hub repos as one job on Ray (embedded locally by default, a cluster by
address). `sources` says which repos, `results` keeps what was found (resumable), `run` schedules
one Ray task per repo per tier and merges the tiers' reports."""
