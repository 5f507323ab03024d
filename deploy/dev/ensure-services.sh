#!/usr/bin/env bash
# Makes sure the local PostgreSQL cluster and Mosquitto broker that HazWatch's tests and demo
# use are running (machines of this kind start them at boot; this only restarts a stopped one).
set -euo pipefail

say() { echo "ensure-services: $*"; }

pg_ready() { pg_isready -q -h 127.0.0.1 -p "${PGPORT:-5432}" 2>/dev/null; }

if pg_ready; then
    say "PostgreSQL is accepting connections"
else
    ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    [ -n "$ver" ] || { say "no PostgreSQL cluster found under /etc/postgresql"; exit 1; }
    say "starting PostgreSQL $ver"
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start
    for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
    pg_ready || { say "PostgreSQL did not come up"; exit 1; }
fi

if (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    say "Mosquitto is listening on 1883"
else
    command -v mosquitto >/dev/null || { say "mosquitto is not installed"; exit 1; }
    say "starting Mosquitto"
    mosquitto -d -c /etc/mosquitto/mosquitto.conf
    for _ in $(seq 1 20); do (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break; sleep 0.5; done
fi
