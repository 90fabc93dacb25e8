"""The Dagster layer: partitions, assets, checks, sensors and schedules wired to domain code."""

import warnings

import dagster as dg

# BackfillPolicy is the documented way to batch many scene partitions per run; its beta notice
# would otherwise print on every load of the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
