"""Next-item models for the time-ordered protocols (leave-last-out, global temporal): two
session baselines written here (recent popularity, last-item transitions) and Cornac's
sequential recommenders (SASRec, BERT4Rec, GRU4Rec, FPMC, SPop), each behind the harness's
`Model` interface, reading each user's training history in `ranking.splits.chronological`
order."""
