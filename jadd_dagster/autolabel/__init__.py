"""Auto-labelling: 2D detectors (pluggable), lifting to 3D boxes, tracking into instances."""
