"""Known answers of the project's sample data (rates.sample, the default 57,000 prices).

tests/integration/test_contract.py checks these against an oracle computed from the
generated rows; the other tests use them as the answer a healthy service gives.
"""

JANUARY = "/rates?date_from=2016-01-01&date_to=2016-01-03&orig_code=CNSGH&dest_code=NLRTM"
JANUARY_BODY = {
    "rates": [
        {"count": 4, "day": "2016-01-03", "price": 1528.0},
        {"count": 4, "day": "2016-01-02", "price": 1535.25},
        {"count": 5, "day": "2016-01-01", "price": 1561.6},
    ]
}
