"""What reads finished runs and tables: the run's report, runs compared, the baselines a user could pick without a
search, the training-free proxies, correlate's consistency protocols, and a network's size (summary). Above the
methods: a search records; these read what it recorded."""
