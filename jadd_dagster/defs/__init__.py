"""The Dagster layer: partitions, assets, checks, sensors and schedules wired to domain code."""

import warnings

import dagster as dg

# BackfillPolicy is the documented way to batch many scene partitions per run; its beta notice
# would otherwise print on every load of the code location.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*backfill_policy.*")
# Dagster 1.13 passes `owners=[]` itself when it attaches resources to a sensor with a target, and
# then warns that the parameter is in beta, in the webserver's and daemon's logs at each load.
warnings.filterwarnings("ignore", category=dg.BetaWarning, message=".*`owners` of initializer `SensorDefinition.__init__`.*")
