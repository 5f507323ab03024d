"""Grouped PUBACKs are byte for byte what paho would send one by one."""

from __future__ import annotations

import struct
from array import array

from hypothesis import given
from hypothesis import strategies as st

from ingest.mqttacks import puback_packets


@given(st.lists(st.integers(1, 65535), max_size=300))
def test_grouped_pubacks_equal_pahos_own_packets(mids: list[int]) -> None:
    # paho's Client._send_command_with_mid(PUBACK, mid, False) packs exactly this.
    expected = b"".join(struct.pack("!BBH", 0x40, 2, mid) for mid in mids)
    assert puback_packets(array("H", mids)) == expected
