"""Issue 7, part 2: the smuggling corpus through sekisho, HAProxy and nginx side by side.

Each proxy has its own recording backend. A case "passes" a proxy when a complete
request reached that proxy's backend. Where sekisho passes something that both
HAProxy and nginx refuse, sekisho is more permissive than both: a bug.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.adversarial.corpus import all_cases
from tests.adversarial.harness import RecordingBackend, Sekisho, proxy_config
from tests.adversarial.peers import haproxy, nginx
from tests.adversarial.runner import Outcome, run_case
from tests.support import require_tool

CASES = all_cases()


@pytest.mark.asyncio
async def test_sekisho_never_more_permissive_than_haproxy_and_nginx(tmp_path: Path) -> None:
    haproxy_bin = require_tool("haproxy")
    nginx_bin = require_tool("nginx")
    backends = [await RecordingBackend().start() for _ in range(3)]
    (tmp_path / "ha").mkdir()
    (tmp_path / "ng").mkdir()
    peers = [
        haproxy(haproxy_bin, tmp_path / "ha", backends[1].port),
        nginx(nginx_bin, tmp_path / "ng", backends[2].port),
    ]
    results: list[tuple[Outcome, Outcome, Outcome]] = []
    try:
        for peer in peers:
            await asyncio.to_thread(peer.start)
        async with Sekisho(proxy_config(backends[0].address)) as s:
            ports = [s.port, peers[0].port, peers[1].port]
            for case in CASES:
                outcomes = await asyncio.gather(
                    *(run_case(port, b, case) for port, b in zip(ports, backends, strict=True))
                )
                results.append((outcomes[0], outcomes[1], outcomes[2]))
    finally:
        for peer in peers:
            await peer.astop()
        for b in backends:
            await b.stop()

    permissive = [
        se.case.name for se, ha, ng in results if se.forwarded and not ha.forwarded and not ng.forwarded
    ]
    stricter = [se.case.name for se, ha, ng in results if not se.forwarded and ha.forwarded and ng.forwarded]
    print(f"\ndifferential over {len(results)} cases")
    print(f"sekisho stricter than both ({len(stricter)}): {stricter}")
    print(f"sekisho more permissive than both ({len(permissive)}): {permissive}")
    for se, ha, ng in results:
        print(
            f"  {se.case.name!r}: sekisho={se.status}/{se.requests} haproxy={ha.status}/{ha.requests} "
            f"nginx={ng.status}/{ng.requests}"
        )
    # The peers really ran the corpus: each forwarded the plain well-formed cases.
    assert sum(ha.forwarded for _, ha, _ in results) >= 30
    assert sum(ng.forwarded for _, _, ng in results) >= 30
    assert permissive == []
