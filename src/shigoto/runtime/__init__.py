"""The worker runtime: a node supervising its producers, executor, acker, notifier,
stager and lifeline. See `node.Node`."""
