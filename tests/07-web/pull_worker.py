"""A pull-style jobrt worker in Python with only the standard library (urllib), as the README
shows one. Used by tests/07-web/pull_spec.lua.

    pull_worker.py BASE_URL QUEUE work N     process N jobs, then exit: "sum" adds args.numbers
                                             (renewing its lease once first), "fail" fails with
                                             a reason and a traceback, anything else echoes args
    pull_worker.py BASE_URL QUEUE hang       reserve one job with a 1 s lease, print its id, then
                                             sleep without renewing (the spec kills it)
Each processed job is printed as one JSON line {"id", "attempt", "outcome"}.
"""
import json
import sys
import time
import urllib.error
import urllib.request


def call(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            text = res.read()
            return res.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def reserve(base, queue, wait, lease):
    status, job = call(base, f"/api/queues/{queue}/reserve?wait={wait}&lease={lease}&worker=py")
    if status == 204:
        return None
    if status != 200:
        raise SystemExit(f"reserve: HTTP {status}: {job}")
    return job


def work(base, queue, n):
    done = 0
    while done < n:
        job = reserve(base, queue, 10, 5)
        if job is None:
            continue
        path = f"/api/queues/{queue}/jobs/{job['id']}"
        lease = job["lease"]
        if job["job"] == "fail":
            status, res = call(base, path + "/fail", {"lease": lease, "error": "python says no",
                                                     "traceback": "Traceback (most recent call last):\n  worker.py"})
            outcome = "failed"
        else:
            if job["job"] == "sum":
                status, res = call(base, path + "/renew", {"lease": lease, "seconds": 5})
                if status != 200:
                    raise SystemExit(f"renew: HTTP {status}: {res}")
                result = {"sum": sum(job["args"]["numbers"])}
            else:
                result = job["args"]
            status, res = call(base, path + "/complete", {"lease": lease, "result": result})
            outcome = "ok"
        if status != 200:
            raise SystemExit(f"{outcome}: HTTP {status}: {res}")
        print(json.dumps({"id": job["id"], "attempt": job["attempt"], "outcome": outcome}), flush=True)
        done += 1


def hang(base, queue):
    job = None
    while job is None:
        job = reserve(base, queue, 10, 1)
    print(json.dumps({"id": job["id"], "attempt": job["attempt"], "outcome": "reserved"}), flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    base, queue, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "work":
        work(base, queue, int(sys.argv[4]))
    else:
        hang(base, queue)
