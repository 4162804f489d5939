"""Training and evaluation of the caption models: data sets, cached CNN features, metrics."""
