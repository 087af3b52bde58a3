"""The read-ahead of a feed's store listing (prefixes.read_ahead): the same items in the same
order, bounded memory, the listing's error raised in its place, and a consumer that stops early
stops the lister."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from service.errors import BlobUnavailable
from service.sources.prefixes import read_ahead


def test_every_item_comes_once_in_order() -> None:
    for count in (0, 1, 999, 1000, 1001, 5432):
        assert list(read_ahead(iter(range(count)), batch=1000)) == list(range(count))


def test_the_lister_runs_at_most_depth_batches_ahead() -> None:
    listed = []

    def pages() -> Iterator[int]:
        for number in range(100):
            listed.append(number)
            yield number

    consumer = read_ahead(pages(), batch=10, depth=2)
    assert next(consumer) == 0
    time.sleep(0.3)  # give the lister all the time it wants
    # The batch handed over, two waiting, and the one being filled (blocked on the full queue).
    assert len(listed) <= 10 * 4
    assert list(consumer) == list(range(1, 100))


def test_a_listing_error_is_raised_after_the_items_before_it() -> None:
    def pages() -> Iterator[int]:
        yield from range(25)
        raise BlobUnavailable("the S3 endpoint http://x failed (503) reading s3://b/p/")

    got = []
    with pytest.raises(BlobUnavailable, match="503"):
        for item in read_ahead(pages(), batch=10):
            got.append(item)
    assert got == list(range(25))


def test_a_consumer_that_stops_early_stops_the_lister() -> None:
    listed = []

    def pages() -> Iterator[int]:
        for number in range(10_000):
            listed.append(number)
            yield number

    consumer = read_ahead(pages(), batch=10, depth=1)
    assert [next(consumer) for _ in range(5)] == [0, 1, 2, 3, 4]
    consumer.close()
    time.sleep(0.6)  # the lister notices at its next hand-over (0.2 s polls)
    count = len(listed)
    time.sleep(0.3)
    assert len(listed) == count < 10_000
