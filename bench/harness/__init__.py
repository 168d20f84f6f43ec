"""The parts of bench/run.py that do not change from one run to the next.

- paths: where things are; scenarios, servers: the two tables of what is compared.
- process: start a server in its own process group, wait until it answers, stop it.
- wrk: run wrk (with a Lua hook for p99.9 and the mixed load) and parse what it prints.
- cpu, memory: where the CPU went during a measurement; a server's summed RSS and PSS.
- slowclients: the attackers, the new-client probe and their tables.
- ceiling: the app called in a loop in one Python process (run as a script).
- report, chart: the markdown report and the PNG chart.
"""


class BenchFailed(Exception):
    """One measurement could not be made; the run goes on with the next one."""
