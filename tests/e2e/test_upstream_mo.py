"""MO from an upstream SMSC is de-duplicated across a restart: the SMSC resends an MO whose
deliver_sm_resp it did not get (the bridge died after storing it), and the ESME gets it once.
"""

from __future__ import annotations

import pytest

from e2e_support import (
    BridgeProcess,
    base_config,
    bind_trx,
    connector_yaml,
    receive_deliver_sm,
    smsc_emulator,
    wait_for,
    with_admin,
)


def config(smsc_port: int) -> str:
    connector = connector_yaml(smsc_port, extra="    rebind_min: 0.2\n    rebind_max: 1\n    health_interval: 0.3\n")
    return with_admin(base_config(extra=f"""
{connector}
routes:
  - name: upstream
    channels: [smsc1]
inbound:
  default_esme: alice
"""))


def answered(smsc) -> int:  # type: ignore[no-untyped-def]
    return smsc.state()["deliver_resps"].get("0", 0)


@pytest.mark.slow
def test_an_mo_the_smsc_resends_after_a_restart_reaches_the_esme_once(tmp_path):
    smsc, port = smsc_emulator()
    bridge = BridgeProcess(tmp_path, config(port)).start()
    try:
        wait_for(lambda: smsc.state()["bound"] == 1)
        c = bind_trx(bridge)
        smsc.inject(sender="+15559999", recipient="12345", text="only once, please")
        (mo,) = receive_deliver_sm(c, 1)
        assert mo.short_message == b"only once, please"
        wait_for(lambda: answered(smsc) == 1)
        bridge.kill()
        bridge.start()
        wait_for(lambda: smsc.state()["bound"] == 1, timeout=15)
        c = bind_trx(bridge)
        # The SMSC sends it again (as it does when our answer was lost with the crash).
        smsc.inject(sender="+15559999", recipient="12345", text="only once, please")
        wait_for(lambda: answered(smsc) == 2, timeout=15)  # answered once stored
        with bridge.db() as db:
            states = sorted(r[0] for r in db.execute("SELECT state FROM inbound"))
            mo_rows = db.execute("SELECT count(*) FROM outbox WHERE kind='mo'").fetchone()[0]
        assert states == ["delivered"]  # the resend was known: answered, not stored again
        assert mo_rows == 1
        # A different MO still goes through: the bridge is not stuck.
        smsc.inject(sender="+15559999", recipient="12345", text="a new one")
        (new,) = receive_deliver_sm(c, 1)
        assert new.short_message == b"a new one"
    finally:
        bridge.stop()
        smsc.stop()
