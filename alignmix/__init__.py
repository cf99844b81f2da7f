"""alignmix: alignment pretraining toolkit."""
