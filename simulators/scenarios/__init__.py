"""Packaged scenario files (YAML); `simulators.scenario.packaged_scenarios()` lists them."""
