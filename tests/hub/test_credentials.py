"""The Hub token goes to the configured endpoint's host only: not to a pagination `Link` that
points elsewhere, not across a redirect, not to any other URL the shared session is asked for.
A second fake Hub on another port plays the foreign host and records the headers it receives."""

from __future__ import annotations

import pytest

from testing.fakehub.builders import safetensors_bytes
from testing.fakehub.server import FakeHub
from tests.hub.conftest import run_check

TOKEN = "hf_good_token"
FILES = {"model.safetensors": safetensors_bytes(64), "config.json": b"{}", "a.json": b"{}",
         "b.json": b"[]", "c.json": b"{}"}


@pytest.fixture
def foreign(hub):
    other = FakeHub(tokens=()).start()
    yield other
    other.stop()


def test_a_pagination_link_to_another_host_gets_no_token(hub, foreign, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.page_size = 2
    hub.page_base = foreign.url          # page 2 is served by the foreign host
    foreign.page_size = 2
    foreign.page_base = hub.url          # ... which links page 3 back to the endpoint
    sha = hub.add_repo("acme/tiny", FILES)
    assert foreign.add_repo("acme/tiny", FILES) == sha
    code, report, _ = run_check("acme/tiny")
    assert code == 0, report
    assert foreign.requests("/tree/"), "the foreign page was requested"
    assert [r["auth"] for r in foreign.log] == [None] * len(foreign.log)
    # the endpoint itself still gets the token, also for the page linked back to it
    assert all(r["auth"] == f"Bearer {TOKEN}" for r in hub.log)
    assert len(hub.requests("/tree/")) >= 2


def test_a_redirect_to_another_host_gets_no_token(hub, foreign, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub.lfs_redirect = True
    hub.redirect_base = foreign.url      # LFS files are served from a foreign CDN host
    sha = hub.add_repo("acme/tiny", FILES)
    assert foreign.add_repo("acme/tiny", FILES) == sha
    code, report, _ = run_check("acme/tiny", "--download")
    assert code == 0, report
    assert foreign.requests("GET /lfs-blobs/")
    assert [r["auth"] for r in foreign.log] == [None] * len(foreign.log)
    assert hub.requests("/resolve/") and all(r["auth"] == f"Bearer {TOKEN}" for r in hub.log)


def test_the_shared_session_strips_the_token_for_every_other_host(hub, foreign):
    """Any caller of huggingface_hub's session (its pagination, downloads, ours) is covered."""
    from huggingface_hub.utils import get_session

    from hfguard.hub.http import configure_session

    configure_session()
    hub.add_repo("acme/tiny", FILES)
    foreign.add_repo("acme/tiny", FILES)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert get_session().get(f"{foreign.url}/api/models/acme/tiny", headers=headers).status_code == 200
    assert get_session().get(f"{hub.url}/api/models/acme/tiny", headers=headers).status_code == 200
    assert foreign.log[-1]["auth"] is None
    assert hub.log[-1]["auth"] == f"Bearer {TOKEN}"
