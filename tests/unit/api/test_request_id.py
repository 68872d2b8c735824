"""Request ids are unique, in time order (the ledger's key grows at its end), and a
forked worker does not repeat its parent's."""

from __future__ import annotations

import os
import re
import time

from gateway.api.request_id import new_request_id


def test_ids_have_the_documented_shape_and_are_unique() -> None:
    ids = [new_request_id() for _ in range(20_000)]
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_ids_sort_in_time_order() -> None:
    first = new_request_id()
    time.sleep(0.005)
    second = new_request_id()
    assert first < second
    millis = int(second[4:15], 16)
    assert abs(millis / 1000 - time.time()) < 60


def test_a_forked_child_draws_other_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(new_request_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    parent = {new_request_id()[15:] for _ in range(50)}
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(pid, 0)
    child = {i[15:] for i in b"".join(chunks).decode().split()}
    assert len(child) == 50
    assert not parent & child
