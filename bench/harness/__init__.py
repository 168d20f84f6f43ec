"""The parts of bench/run.py that do not change when a server or scenario is added.

- process: start a server in its own process group, wait until it answers, stop it.
- wrk: run wrk and parse what it prints.
- cpu: where the machine's CPU went during a measurement.
- report: the machine's description and the markdown tables.
"""


class BenchFailed(Exception):
    """One measurement could not be made; the run goes on with the next one."""
