"""AI-discourse classifiers: the blocklist (terms as data files); model classifiers plug in beside it."""
