"""The platform on loopback under load and faults (``make bench-e2e``, and its shortened test).

:mod:`~oo.fakes.e2e.stack` starts the real processes (fake Todoist, serving with its separate
learner, the app API with its outbox relay) on free ports and kills or restarts them;
:mod:`~oo.fakes.e2e.load` drives signed-up users through the app API at a fixed offered rate
while faults happen; :mod:`~oo.fakes.e2e.ledger` waits for the relay to drain and counts where
every accepted reaction arrived. Test and benchmark tooling: not shipped in the wheel.
"""
