"""Seeded physical models of the plant, one module per kind of process.

Every model owns some sensors, advances its physics one fixed tick at a time (`step`) and
answers what each of its sensors reads now (`sample`). Models never look at a clock: the
simulation hands them the virtual time. They draw randomness only from their own streams
(`simulators.rng`), in an order fixed by the tick count, so a run is reproducible.
"""
