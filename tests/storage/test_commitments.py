"""Commitment requests are leased to one process at a time, and taken over if it dies."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from storage import Archive, Commitments
from storage.index.tables import CommitmentRequest

ITEMS = [("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")]


def test_the_receiving_process_holds_the_request(archive: Archive) -> None:
    first, second = Commitments(archive, owner="node-a:1"), Commitments(archive, owner="node-b:2")
    first.record(transaction_uid="1.2.9", calling_aet="CT1", address=None, items=ITEMS)
    (request,) = first.due()
    assert second.due() == []
    assert first.claim(request)
    assert not second.claim(request)


def test_another_process_takes_over_when_the_lease_ends(archive: Archive) -> None:
    first, second = Commitments(archive, owner="node-a:1"), Commitments(archive, owner="node-b:2")
    first.record(transaction_uid="1.2.9", calling_aet="CT1", address=None, items=ITEMS)
    expired = datetime.now(UTC) - timedelta(seconds=1)
    with archive.engine.begin() as conn:
        conn.execute(update(CommitmentRequest).values(claimed_until=expired))
    (request,) = second.due()
    assert second.claim(request)
    assert not first.claim(request)
    assert first.due() == []


def test_a_done_request_is_not_due(archive: Archive) -> None:
    commitments = Commitments(archive, owner="node-a:1")
    commitments.record(transaction_uid="1.2.9", calling_aet="CT1", address=None, items=ITEMS)
    (request,) = commitments.due()
    commitments.mark_done(request.id)
    assert commitments.due() == []


def test_a_dead_process_on_this_host_is_taken_over_at_once(archive: Archive) -> None:
    import socket

    gone = Commitments(archive, owner=f"{socket.gethostname()}:999999999")
    gone.record(transaction_uid="1.2.9", calling_aet="CT1", address=None, items=ITEMS)
    alive = Commitments(archive, owner="node-b:2")
    (request,) = alive.due()
    assert alive.claim(request)


def test_only_one_of_two_processes_wins_a_takeover(archive: Archive) -> None:
    first, second = Commitments(archive, owner="node-a:1"), Commitments(archive, owner="node-b:2")
    Commitments(archive, owner="node-c:3").record(
        transaction_uid="1.2.9", calling_aet="CT1", address=None, items=ITEMS
    )
    with archive.engine.begin() as conn:
        conn.execute(
            update(CommitmentRequest).values(claimed_until=datetime.now(UTC) - timedelta(1))
        )
    (seen_by_first,) = first.due()
    (seen_by_second,) = second.due()
    assert first.claim(seen_by_first)
    assert not second.claim(seen_by_second)
