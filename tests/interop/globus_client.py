#!/usr/bin/env python3
"""ProxyStore 1.1.0's RelayClient against a Switchboard relay with Globus auth.

Usage: globus_client.py ws://127.0.0.1:PORT

Run by tests/proxystore_relay.rs against `switchboard --proxystore-config`
with `[auth] method = "globus"` and its introspection endpoint pointed at a
loopback stand-in. A client sending `Authorization: Bearer globus-ada` (the
way a Globus-authenticated ProxyStore endpoint connects, through
`extra_headers`) registers; one with a revoked token is refused with 4002.
Every await is bounded; one `ok:` line is printed per check; exit 0 means
all passed. Talks only to the address given on the command line.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import websockets.exceptions
from proxystore.p2p.relay.client import RelayClient
from proxystore.p2p.relay.exceptions import RelayRegistrationError

STEP_TIMEOUT = 10.0


def client(address: str, token: str) -> RelayClient:
    return RelayClient(
        address,
        client_name=f'globus-{token}',
        client_uuid=uuid.uuid4(),
        extra_headers={'Authorization': f'Bearer {token}'},
        reconnect_task=False,
        timeout=STEP_TIMEOUT,
    )


async def main(address: str) -> None:
    ada = client(address, 'globus-ada')
    await asyncio.wait_for(ada.connect(retry=False), STEP_TIMEOUT)
    print('ok: a valid Globus token registers', flush=True)
    await asyncio.wait_for(ada.close(), STEP_TIMEOUT)

    revoked = client(address, 'revoked')
    try:
        await asyncio.wait_for(revoked.connect(retry=False), STEP_TIMEOUT)
    except websockets.exceptions.ConnectionClosed as e:
        assert e.rcvd is not None and e.rcvd.code == 4002, e
        assert e.rcvd.reason.startswith('ForbiddenError'), e.rcvd.reason
    except RelayRegistrationError as e:
        assert 'ForbiddenError' in str(e), e
    else:
        raise AssertionError('a revoked token registered')
    finally:
        await asyncio.wait_for(revoked.close(), STEP_TIMEOUT)
    print('ok: a revoked token is refused with 4002', flush=True)


if __name__ == '__main__':
    asyncio.run(asyncio.wait_for(main(sys.argv[1]), 45))
