"""Tasks: offline, seeded data + model factories + losses (datasets.py, models.py) and 2-D
loss surfaces (surfaces.py)."""
