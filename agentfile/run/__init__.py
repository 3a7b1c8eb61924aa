"""Running targets: the scheduler, one target's attempts, the reactor, processes and throttling."""
