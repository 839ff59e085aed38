"""The bare libcurl baseline: one pycurl CurlMulti sending N requests, no server involved."""

from __future__ import annotations

import time

import pycurl


def curl_multi_rate(url: str, count: int, concurrency: int) -> float:
    """Requests per second for `count` GETs with `concurrency` in flight."""
    multi = pycurl.CurlMulti()
    idle = [pycurl.Curl() for _ in range(min(concurrency, count))]
    for handle in idle:
        handle.setopt(pycurl.WRITEFUNCTION, len)
        handle.setopt(pycurl.NOSIGNAL, 1)
    sent = done = 0
    started = time.perf_counter()
    while done < count:
        while idle and sent < count:
            handle = idle.pop()
            handle.setopt(pycurl.URL, f"{url}{sent}")
            multi.add_handle(handle)
            sent += 1
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, ok, failed = multi.info_read()
            for handle in ok + [entry[0] for entry in failed]:
                multi.remove_handle(handle)
                idle.append(handle)
                done += 1
            if not queued:
                break
        multi.select(0.01)
    elapsed = time.perf_counter() - started
    for handle in idle:
        handle.close()
    multi.close()
    return count / elapsed
