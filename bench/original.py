"""The original service, reproduced for the benchmark: the baseline the issue measures against.

What the task's original service did, as observed (../shared/data/README.md) and kept here on
purpose: one psycopg2 connection opened when the app is imported and never reconnected, never
committed (it stays `idle in transaction`), and the query a sequential scan, because the original
database has no index on prices (the bench drops `prices_orig_code_dest_code_day_idx` in the
database this app reads). gunicorn runs it with its defaults: one sync worker
(`gunicorn -w 1 -k sync bench.original:app`). The answers are the same JSON as the service's.

Connection settings come from libpq's own PG* variables.
"""

from __future__ import annotations

import datetime as dt

import psycopg2
from flask import Flask, jsonify, request
from flask.json.provider import DefaultJSONProvider

# The same query as the service's (rates/app.py RATES), as the original ran it: text
# interpolated by psycopg2, parsed and planned on every request; without the index
# PostgreSQL scans the whole table.
RATES_SQL = """
SELECT day, count(*), avg(price)::float8
FROM prices
WHERE orig_code = %(orig)s AND dest_code = %(dest)s
  AND day BETWEEN %(date_from)s AND %(date_to)s
GROUP BY day
"""

app = Flask(__name__)
json_provider = DefaultJSONProvider(app)
json_provider.sort_keys = True
app.json = json_provider
# Opened at import, shared by every request, never committed, never reopened.
connection = psycopg2.connect("")


@app.get("/")
def hello():
    return {"message": "Hello world!"}


@app.get("/rates")
def rates():
    args = request.args
    try:
        date_from = dt.date.fromisoformat(args["date_from"])
        date_to = dt.date.fromisoformat(args["date_to"])
        orig, dest = args["orig_code"], args["dest_code"]
    except (KeyError, ValueError):
        return jsonify(error="bad_request"), 400
    if not orig or not dest:
        return jsonify(error="bad_request"), 400
    cur = connection.cursor()
    cur.execute(RATES_SQL, {"orig": orig, "dest": dest, "date_from": date_from, "date_to": date_to})
    by_day = {day: (count, avg) for day, count, avg in cur.fetchall()}
    result = []
    day = date_to
    while day >= date_from:
        count, avg = by_day.get(day, (None, None))
        price = avg if count is not None and count >= 3 else None
        result.append({"day": day.isoformat(), "count": count, "price": price})
        day -= dt.timedelta(days=1)
    return {"rates": result}
