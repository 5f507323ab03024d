"""HazWatch simulators: a seeded, deterministic model of the plant in a registry, with scenario
stories and faults, published over MQTT (and served over Modbus) at any speed.

    simulation.Simulation    the model on a virtual clock: readings and device state
    scenario                 scenario files (YAML): events and promised alarms
    faults, delivery         sensor faults; duplicate and out-of-order publishing
    mqtt_publisher           the MQTT shell: paced publishing with PUBACK accounting
    expectations             checks a stream against a scenario's promised tier crossings
    export                   the stream as JSON lines or CSV (the replay harness's input)

docs/simulators.md is the guide.
"""
