"""Ranking metrics and train/test splits: pure numpy/pandas, importing nothing above them."""
