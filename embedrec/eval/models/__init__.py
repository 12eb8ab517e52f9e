"""Ranking evaluation: the models, the leaderboard (train / evaluate) and `embedrec tune`."""
